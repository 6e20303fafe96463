# Each component module is imported here so that importing mmdaf registers it.
from .box_pooling import box_pooled_features  # noqa: F401
from .grad_scale import scale_gradient  # noqa: F401
from .location_heatmap import LocationHeatmap, LocationHeatmapOutput  # noqa: F401
from .part_image_rank_target import PartImageRankTarget  # noqa: F401
from .part_images import (  # noqa: F401
    PartImageGenerator,
    boxes_to_saliency_mask,
    crop_around_boxes,
    make_part_images,
)
from .window_rank_target import WindowRankTarget  # noqa: F401
