from .inferencer import DAFInferencer, list_images  # noqa: F401
from .part_drawing import PART_COLORS, draw_parts  # noqa: F401

__all__ = ['DAFInferencer', 'PART_COLORS', 'draw_parts', 'list_images']
