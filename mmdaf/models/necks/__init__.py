# Each component module is imported here so that importing mmdaf registers it.
from .paf_bilinear_neck import PAFBilinearNeck  # noqa: F401
