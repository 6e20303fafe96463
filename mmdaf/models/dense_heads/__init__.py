# Each component module is imported here so that importing mmdaf registers it.
from .part_discovery_head import PartDiscoveryHead  # noqa: F401
from .sppn_head import SPPNHead  # noqa: F401
