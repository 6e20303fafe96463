from .part_coverage import PartCoverage  # noqa: F401
from .part_hit_rate import PartHitRate  # noqa: F401
from .stream_accuracy import StreamAccuracy  # noqa: F401
