"""Pictures of where DAF-net looks: the location heatmap and the part boxes.

One drawing function, :func:`draw_parts`, shared by ``tools/infer.py`` (through
:class:`~mmdaf.apis.DAFInferencer`), ``tools/misc/draw_test_parts.py`` and the
validation-time :class:`~mmdaf.engine.PartVisualizationHook`.

Small images (the synthetic set is 64-96 px) are upscaled before anything is
drawn on them: a label of readable size would otherwise cover most of the image.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

# Box colours (RGB) by rank: the best-scored part first.
PART_COLORS: Tuple[Tuple[int, int, int], ...] = (
    (255, 40, 40),    # red
    (40, 220, 40),    # green
    (40, 120, 255),   # blue
    (255, 200, 0),    # yellow
    (255, 0, 255),    # magenta
    (0, 230, 230),    # cyan
    (255, 128, 0),    # orange
    (160, 60, 255),   # violet
)


# Shorter side of the picture: labels in a readable font then fit inside boxes
# of a quarter of the image side.
DEFAULT_MIN_SIDE = 384
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _to_numpy(value: ArrayLike, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f'{name} must be a numpy array or a torch tensor, '
                    f'got {type(value).__name__}')


def upscale_factor(height: int, width: int, min_side: int) -> int:
    """The smallest integer factor that brings the shorter side to ``min_side``.

    An integer factor turns every pixel into an equal square block and maps box
    edges exactly; a fractional nearest-neighbour factor would draw some pixel
    rows twice as thick as others.

    Args:
        height (int): image height in pixels.
        width (int): image width in pixels.
        min_side (int): wanted shorter side; 0 or less means no upscaling.

    Returns:
        int: ``ceil(min_side / min(height, width))``, at least 1 (images are
        never shrunk).
    """
    if min_side <= 0:
        return 1
    return max(1, math.ceil(min_side / min(height, width)))


def overlay_heatmap(image_rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5,
                    colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Blend a colour-mapped heatmap onto an image, weighted by the heat.

    Each pixel becomes ``(1 - alpha * h) * image + alpha * h * colour(h)``, so
    cold pixels (h = 0) keep the image and the hottest are ``alpha`` colour:
    the picture shows the object region, not a blue wash over the background.

    Args:
        image_rgb (np.ndarray): (H, W, 3) uint8.
        heatmap (np.ndarray): (h, w) float; values are clipped to [0, 1] and
            resized bilinearly to (H, W).
        alpha (float): opacity of the hottest pixels, in [0, 1].
        colormap (int): an OpenCV colour map id.

    Returns:
        np.ndarray: (H, W, 3) uint8.
    """
    height, width = image_rgb.shape[:2]
    heat = np.clip(heatmap.astype(np.float32), 0.0, 1.0)
    if heat.shape != (height, width):
        heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    heat_u8 = np.round(heat * 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(heat_u8, colormap), cv2.COLOR_BGR2RGB)
    weight = alpha * heat[..., None]
    blended = (1.0 - weight) * image_rgb.astype(np.float32) + weight * colour
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def _font_for(short_side: int) -> Tuple[float, int]:
    """OpenCV font scale and stroke width for a picture with this shorter side.

    About 14 px capitals at 384 px (scale 0.64); below 0.35 OpenCV's strokes
    merge, so smaller pictures (drawn with ``min_side=0``) keep that size.
    """
    font_scale = max(0.35, short_side / 600)
    return font_scale, max(1, int(round(font_scale * 1.6)))


def draw_boxes(image_rgb: np.ndarray, boxes_xyxy: np.ndarray, scores: np.ndarray,
               thickness: Optional[int] = None) -> np.ndarray:
    """Draw part boxes with their rank (1 = highest score) and score.

    Box ``r`` (in descending score order) gets ``PART_COLORS[r % 8]``; the label
    ``"<rank>:<score>"`` is written in black on a tag of that colour inside the
    box's top-left corner.

    Args:
        image_rgb (np.ndarray): (H, W, 3) uint8 (not modified).
        boxes_xyxy (np.ndarray): (N, 4) boxes in pixels of ``image_rgb``.
        scores (np.ndarray): (N,) part scores.
        thickness (int, optional): line width; default about 1/128 of the
            shorter image side (3 px at 384), at least 1.

    Returns:
        np.ndarray: (H, W, 3) uint8.
    """
    canvas = np.ascontiguousarray(image_rgb.copy())
    height, width = canvas.shape[:2]
    short_side = min(height, width)
    if thickness is None:
        thickness = max(1, int(round(short_side / 128)))
    font_scale, font_thickness = _font_for(short_side)
    order = np.argsort(-scores, kind='stable')
    for rank, index in enumerate(order):
        colour = PART_COLORS[rank % len(PART_COLORS)]
        x1, y1, x2, y2 = boxes_xyxy[index]
        x1, x2 = (int(round(np.clip(v, 0, width - 1))) for v in (x1, x2))
        y1, y2 = (int(round(np.clip(v, 0, height - 1))) for v in (y1, y2))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        label = f'{rank + 1}:{float(scores[index]):.2f}'
        (text_width, text_height), baseline = cv2.getTextSize(
            label, FONT, font_scale, font_thickness)
        # Black text on a box-coloured tag in the top-left corner: readable on
        # any background, and the colour still says which box it belongs to.
        tag_x2 = min(width - 1, x1 + text_width + 2)
        tag_y2 = min(height - 1, y1 + text_height + baseline + 2)
        cv2.rectangle(canvas, (x1, y1), (tag_x2, tag_y2), colour, cv2.FILLED)
        cv2.putText(canvas, label, (x1 + 1, min(height - 1, y1 + text_height + 1)),
                    FONT, font_scale, (0, 0, 0), font_thickness, cv2.LINE_AA)
    return canvas


def _wrap_line(text: str, font_scale: float, thickness: int, max_width: int) -> List[str]:
    """Split ``text`` into pieces no wider than ``max_width`` pixels, breaking
    after a space or underscore where possible (class names are long
    ``Red_beak_Fan_crest_...`` words), else between characters."""
    def width(piece: str) -> int:
        return cv2.getTextSize(piece, FONT, font_scale, thickness)[0][0]

    pieces: List[str] = []
    rest = text
    while rest and width(rest) > max_width:
        cut = 1
        while cut < len(rest) and width(rest[:cut + 1]) <= max_width:
            cut += 1
        breaks = [i + 1 for i in range(cut) if rest[i] in ' _']
        if breaks and breaks[-1] < len(rest):
            cut = breaks[-1]
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def add_caption(picture: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Put text lines in a black band above the picture, so they cover nothing.

    The font is sized like the box labels (from the picture's shorter side);
    lines wider than the picture are wrapped.

    Args:
        picture (np.ndarray): (H, W, 3) uint8.
        lines (Sequence[str]): text lines, top to bottom (ASCII: OpenCV's
            fonts have no other glyphs).

    Returns:
        np.ndarray: (H + band, W, 3) uint8, the band's height growing with
        the number of (wrapped) lines.
    """
    height, width = picture.shape[:2]
    font_scale, thickness = _font_for(min(height, width))
    margin = max(2, int(round(font_scale * 8)))
    wrapped = [piece for line in lines
               for piece in _wrap_line(str(line), font_scale, thickness,
                                       width - 2 * margin)]
    (_, text_height), baseline = cv2.getTextSize('Ag', FONT, font_scale, thickness)
    line_height = text_height + baseline + margin // 2
    band = np.zeros((margin + line_height * len(wrapped), width, 3), np.uint8)
    for index, piece in enumerate(wrapped):
        y = margin + index * line_height + text_height
        cv2.putText(band, piece, (margin, y), FONT, font_scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return np.concatenate([band, picture], axis=0)


def draw_parts(image_rgb: np.ndarray,
               heatmap: Optional[ArrayLike] = None,
               boxes: Optional[ArrayLike] = None,
               scores: Optional[ArrayLike] = None,
               alpha: float = 0.5,
               min_side: int = DEFAULT_MIN_SIDE,
               caption: Optional[Sequence[str]] = None) -> np.ndarray:
    """The picture of what DAF-net looks at: heatmap overlay plus part boxes.

    An image whose shorter side is below ``min_side`` is first upscaled by the
    integer factor ``s = ceil(min_side / min(H, W))`` (see
    :func:`upscale_factor`), then the heatmap, the boxes (multiplied by ``s``)
    and the labels are drawn on the upscaled image, so that the labels stay
    small next to the image. The image is upscaled nearest-neighbour: each
    pixel the network saw stays one sharp ``s x s`` block, and the few-pixel
    parts of a small image are not smeared. The heatmap is resized bilinearly:
    it is a smooth map sampled on a coarse (stride-8) grid, and blocks would
    show the grid, not the model.

    Args:
        image_rgb (np.ndarray): (H, W, 3) uint8 RGB image, in the coordinates
            of ``boxes``.
        heatmap (np.ndarray | Tensor, optional): (h, w) or (1, h, w) location
            heatmap in [0, 1] covering the whole image (any resolution, e.g.
            the stride-8 grid); None draws no overlay.
        boxes (np.ndarray | Tensor, optional): (N, 4) xyxy part boxes in pixels
            of ``image_rgb`` (not of the upscaled picture); None draws no boxes.
        scores (np.ndarray | Tensor, optional): (N,) part scores; required
            with ``boxes``.
        alpha (float): heatmap opacity at heat 1, in [0, 1]. Defaults to 0.5.
        min_side (int): upscale until the shorter side is at least this many
            pixels; 0 draws at the image's own size. Defaults to 384.
        caption (Sequence[str], optional): text lines (e.g. the predicted and
            the true class) written in a black band added above the picture.

    Returns:
        np.ndarray: (s * H + band, s * W, 3) uint8, a new array; ``band`` is 0
        without a caption.
    """
    if not isinstance(image_rgb, np.ndarray) or image_rgb.dtype != np.uint8 \
            or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        if isinstance(image_rgb, np.ndarray):
            description = f'{image_rgb.dtype} array of shape {image_rgb.shape}'
        else:
            description = type(image_rgb).__name__
        raise ValueError(f'image_rgb must be a uint8 array of shape (H, W, 3), got '
                         f'{description}')
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    if not isinstance(min_side, int) or isinstance(min_side, bool):
        raise TypeError(f'min_side must be an int, got {min_side!r}')
    factor = upscale_factor(image_rgb.shape[0], image_rgb.shape[1], min_side)
    if factor > 1:
        canvas = cv2.resize(image_rgb, None, fx=factor, fy=factor,
                            interpolation=cv2.INTER_NEAREST)
    else:
        canvas = image_rgb.copy()

    if heatmap is not None:
        heat = _to_numpy(heatmap, 'heatmap')
        if heat.ndim == 3 and heat.shape[0] == 1:
            heat = heat[0]
        if heat.ndim != 2:
            raise ValueError(f'heatmap must have shape (h, w) or (1, h, w), got '
                             f'{tuple(heat.shape)}')
        canvas = overlay_heatmap(canvas, heat, alpha)

    if boxes is not None:
        if scores is None:
            raise ValueError('scores must be given with boxes')
        boxes_xyxy = _to_numpy(boxes, 'boxes').astype(np.float64)
        part_scores = _to_numpy(scores, 'scores').astype(np.float64).reshape(-1)
        if boxes_xyxy.ndim != 2 or boxes_xyxy.shape[1] != 4:
            raise ValueError(f'boxes must have shape (N, 4), got {boxes_xyxy.shape}')
        if part_scores.shape[0] != boxes_xyxy.shape[0]:
            raise ValueError(f'scores must have shape ({boxes_xyxy.shape[0]},) to '
                             f'match boxes, got {part_scores.shape}')
        canvas = draw_boxes(canvas, boxes_xyxy * factor, part_scores)
    if caption:
        canvas = add_caption(canvas, caption)
    return canvas
