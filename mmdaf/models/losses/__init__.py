# Each component module is imported here so that importing mmdaf registers it.
from .area_loss import PartAreaLoss  # noqa: F401
from .concentrate_loss import ConcentrateLoss  # noqa: F401
from .hint_loss import HintLoss  # noqa: F401
from .overlap_loss import PartOverlapLoss  # noqa: F401
from .ranking_loss import PartRankingLoss  # noqa: F401
from .soft_target_loss import SoftTargetLoss  # noqa: F401
