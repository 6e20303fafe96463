# Each component module is imported here so that importing mmdaf registers it.
from .finest_level_fpn import FinestLevelFPN  # noqa: F401
from .finest_stage_mapper import FinestStageMapper  # noqa: F401
from .paf_bilinear_neck import PAFBilinearNeck  # noqa: F401
