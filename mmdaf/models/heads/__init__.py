# Each component module is imported here so that importing mmdaf registers it.
from .class_score_fusion_head import ClassScoreFusionHead  # noqa: F401
from .daf_distiller import DAFDistiller  # noqa: F401
from .daf_teacher import DAFTeacher  # noqa: F401
from .pooled_part_head import PooledPartHead  # noqa: F401
