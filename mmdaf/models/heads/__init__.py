# Each component module is imported here so that importing mmdaf registers it.
from .class_score_fusion_head import ClassScoreFusionHead  # noqa: F401
