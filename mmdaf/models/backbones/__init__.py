# Each component module is imported here so that importing mmdaf registers it.
from .expanded_input_resnet import ExpandedInputResNet  # noqa: F401
from .non_reentrant_cp_resnet import NonReentrantCPResLayer, NonReentrantCPResNet  # noqa: F401
