# Each component module is imported here so that importing mmdaf registers it.
from .dilated_convnext import DilatedConvNeXt  # noqa: F401
from .expanded_input_backbone import ExpandedInputBackbone  # noqa: F401
from .expanded_input_resnet import ExpandedInputResNet  # noqa: F401
from .non_reentrant_cp_backbone import NonReentrantCPBackbone  # noqa: F401
from .non_reentrant_cp_resnet import NonReentrantCPResLayer, NonReentrantCPResNet  # noqa: F401
