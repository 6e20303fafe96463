# Each component module is imported here so that importing mmdaf registers it.
from .sppn_head import SPPNHead  # noqa: F401
