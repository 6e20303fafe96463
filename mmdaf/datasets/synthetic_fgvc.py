"""A synthetic fine-grained image set written in CUB-200-2011's on-disk layout.

Every image shows one bird-like figure with a shared body plan (tail, body, wing,
head, eye, beak, crest, legs) on a cluttered background. Position, scale,
rotation, horizontal flip, body colour, background and clutter are drawn at random
for each image and carry no class information, and so are the crest's colour
and the wing patch's colour. The class is decided only by attributes of four
small parts (each under about 2.5% of the image area):

=====  =================  =====================================
part   attribute          values
=====  =================  =====================================
beak   colour             red, yellow, blue, black
crown  crest shape        spike, double, round, fan
wing   wing-patch pattern plain, bars, stripes, spot
tail   tail-tip colour    red, yellow, blue, white
=====  =================  =====================================

Each class is a distinct combination of these values (at most
``MAX_NUM_CLASSES = 256`` classes); :func:`class_part_attributes` gives the table.
For ``num_classes >= 4`` every value that a part takes is shared by at least two
classes, so no single part decides the class (with 2 or 3 classes this cannot
hold). The clutter is painted with the same colours as the parts and contains
part-like shapes (small triangles, dots, striped patches), so neither a colour
histogram nor a part seen out of context gives the class away. With
``part_like_clutter=False`` the clutter has neither (plain ellipses, rectangles
and twigs in muted colours), so no decoy imitates a part seen out of context.
A random branch sometimes occludes part of the bird; parts it covers are marked
invisible.

Files written under ``out_dir`` (CUB's formats, ids 1-based):

- ``images.txt``: ``<image_id> <class_dir>/<file>.jpg``
- ``image_class_labels.txt``: ``<image_id> <class_id>``
- ``train_test_split.txt``: ``<image_id> <1 = train | 0 = test>``
- ``classes.txt``: ``<class_id> <NNN.Name>``
- ``bounding_boxes.txt``: ``<image_id> <x> <y> <width> <height>`` (object box)
- ``parts/parts.txt``: ``<part_id> <part name>``
- ``parts/part_locs.txt``: ``<image_id> <part_id> <x> <y> <visible>``
- ``images/<class_dir>/<file>.jpg``

mmdaf extensions, not in CUB:

- ``parts/part_boxes.txt``: ``<image_id> <part_id> <x1> <y1> <x2> <y2>``, the
  axis-aligned box of each part's drawn region in pixels, so that a benchmark can
  test whether a proposal's centre lies within a part.
- ``parts/class_part_attributes.txt``: ``<class_id> <part_id> <value>`` for the
  informative parts.

Unlike CUB, which writes ``0.0 0.0`` for an invisible part, ``part_locs.txt``
keeps an occluded part's true location; readers should use ``visible``.

mmpretrain's ``CUB(data_root=out_dir, split='train' | 'test')`` reads the set
(labels 0-based there). Its ``METAINFO`` lists CUB's 200 bird names; pass
``metainfo=dict(classes=...)`` with the names of ``classes.txt`` to get ours.

Every image is drawn from its own random generator seeded by ``(seed,
image_id)``, so the same arguments give the same bytes with any ``num_workers``
(with the same numpy and Pillow/libjpeg builds).
"""
import colorsys
import multiprocessing
import os
import os.path as osp
import shutil
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

PART_NAMES: Tuple[str, ...] = ('beak', 'crown', 'eye', 'wing', 'tail')
# The informative parts and the values of their one attribute: beak colour,
# crest shape, wing-patch pattern and tail-tip colour.
PART_ATTRIBUTES: Dict[str, Tuple[str, ...]] = {
    'beak': ('red', 'yellow', 'blue', 'black'),
    'crown': ('spike', 'double', 'round', 'fan'),
    'wing': ('plain', 'bars', 'stripes', 'spot'),
    'tail': ('red', 'yellow', 'blue', 'white'),
}
MAX_NUM_CLASSES = int(np.prod([len(v) for v in PART_ATTRIBUTES.values()]))

PALETTE: Dict[str, Tuple[int, int, int]] = {
    'red': (214, 40, 40),
    'yellow': (244, 204, 32),
    'blue': (36, 86, 216),
    'white': (242, 242, 238),
    'black': (22, 22, 26),
    'green': (40, 160, 70),
    'orange': (240, 128, 24),
    'purple': (140, 56, 184),
}
_PALETTE_COLOURS = list(PALETTE.values())

# Random streams: the class table and each image get their own, so that an
# image's pixels depend only on (seed, image_id) and its class.
_TABLE_STREAM = 0
_IMAGE_STREAM = 1
_MAX_TABLE_TRIES = 5000

# Drawing at twice the size and box-downsampling antialiases the small parts.
_SUPERSAMPLE = 2
_OCCLUDER_PROB = 0.25
# A part is invisible when the occluder covers at least this fraction of it.
_OCCLUDED_FRACTION = 0.5

FILE_NAMES = ('images.txt', 'image_class_labels.txt', 'train_test_split.txt',
              'classes.txt', 'bounding_boxes.txt')
DIR_NAMES = ('images', 'parts')


# ----------------------------------------------------------------------------
# Class table
# ----------------------------------------------------------------------------
def _check_int(name: str, value, low: int, high: Optional[int] = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f'{name} must be an int, got {value!r}')
    if value < low or (high is not None and value > high):
        bounds = f'>= {low}' if high is None else f'in [{low}, {high}]'
        raise ValueError(f'{name} must be {bounds}, got {value}')


def _codes_are_valid(codes: np.ndarray, need_shared: bool) -> bool:
    """Whether class rows are distinct and (optionally) each value is shared."""
    if len(np.unique(codes, axis=0)) != len(codes):
        return False
    if not need_shared:
        return True
    for column in codes.T:
        counts = np.bincount(column)
        counts = counts[counts > 0]
        # A part with one value says nothing; a value held by one class alone
        # would decide that class from this part only.
        if len(counts) < 2 or counts.min() < 2:
            return False
    return True


def _sample_class_codes(num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Value indices of the informative parts per class, shape (K, num_parts)."""
    sizes = np.array([len(v) for v in PART_ATTRIBUTES.values()])
    need_shared = num_classes >= 4
    # Each part uses at most K // 2 of its values so that each can be shared.
    used = np.minimum(sizes, max(2, num_classes // 2))
    all_codes = np.indices(used).reshape(len(used), -1).T
    for attempt in range(_MAX_TABLE_TRIES):
        if attempt % 2 == 0:
            # A random subset of the combinations: suits many classes.
            rows = rng.choice(len(all_codes), num_classes, replace=False)
            codes = all_codes[np.sort(rows)]
        else:
            # Balanced value counts per part: suits few classes.
            codes = np.stack([
                rng.permutation(np.arange(num_classes) % n) for n in used
            ], axis=1)
        if _codes_are_valid(codes, need_shared):
            break
    else:
        raise RuntimeError(
            f'found no valid class table for num_classes={num_classes}')
    # Which of each part's values are used is random too.
    value_perms = [rng.permutation(n) for n in sizes]
    return np.stack([perm[codes[:, i]] for i, perm in enumerate(value_perms)],
                    axis=1)


def class_part_attributes(num_classes: int, seed: int = 0) -> List[Dict[str, str]]:
    """The class table: the value of each informative part for each class.

    Args:
        num_classes (int): Number of classes, in [2, ``MAX_NUM_CLASSES``].
        seed (int): Seed of the table. Defaults to 0.

    Returns:
        list[dict[str, str]]: Entry ``k`` (0-based label) maps each part of
        ``PART_ATTRIBUTES`` to its value, e.g. ``{'beak': 'red', 'crown':
        'fan', 'wing': 'bars', 'tail': 'white'}``. Entries are distinct; for
        ``num_classes >= 4`` each part takes at least two values and every
        value it takes is shared by at least two classes.
    """
    _check_int('num_classes', num_classes, 2, MAX_NUM_CLASSES)
    _check_int('seed', seed, 0)
    rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(_TABLE_STREAM, )))
    codes = _sample_class_codes(num_classes, rng)
    parts = list(PART_ATTRIBUTES)
    return [{
        part: PART_ATTRIBUTES[part][code]
        for part, code in zip(parts, row)
    } for row in codes.tolist()]


def class_dir_name(class_id: int, attributes: Dict[str, str]) -> str:
    """CUB-style class folder name, e.g. ``001.Red_beak_Fan_crest_...``."""
    words = [f'{attributes[p].capitalize()}_{w}' for p, w in
             (('beak', 'beak'), ('crown', 'crest'), ('wing', 'wing'),
              ('tail', 'tail'))]
    return f'{class_id:03d}.' + '_'.join(words)


# ----------------------------------------------------------------------------
# Body plan, in the bird's own frame: unit ~ half the bird's length, x points
# from tail to beak, y points down.
# ----------------------------------------------------------------------------
def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24,
             start: float = 0.0, stop: float = 2 * np.pi,
             closed: bool = True) -> np.ndarray:
    angles = np.linspace(start, stop, n, endpoint=not closed)
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def _lerp(a: Sequence[float], b: Sequence[float], t: float) -> List[float]:
    return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]


def _thick_line(start: Sequence[float], end: Sequence[float],
                half_width: float) -> np.ndarray:
    direction = np.subtract(end, start)
    normal = np.array([-direction[1], direction[0]]) / np.hypot(*direction)
    offset = normal * half_width
    return np.array([start + offset, end + offset, end - offset, start - offset])


def _thin_spike(base: Sequence[float], tip: Sequence[float],
                half_width: float) -> np.ndarray:
    direction = np.subtract(tip, base)
    normal = np.array([-direction[1], direction[0]]) / np.hypot(*direction)
    return np.array([base + normal * half_width, tip, base - normal * half_width])


_BODY = _ellipse(0.0, 0.0, 0.50, 0.27)
_HEAD = _ellipse(0.48, -0.20, 0.18, 0.18)
_WING = _ellipse(-0.08, -0.01, 0.36, 0.16)
_PATCH_BOX = (-0.26, -0.09, 0.08, 0.07)
_PATCH = _rect(*_PATCH_BOX)
_EYE_RING = _ellipse(0.55, -0.25, 0.065, 0.065, n=12)
_EYE_PUPIL = _ellipse(0.555, -0.25, 0.04, 0.04, n=10)
_BEAK = np.array([[0.62, -0.26], [0.62, -0.12], [0.93, -0.19]])
_TAIL_TOP = ((-0.42, -0.07), (-0.95, -0.22))
_TAIL_BOTTOM = ((-0.42, 0.07), (-0.95, 0.13))
_TAIL = np.array([_TAIL_TOP[0], _TAIL_TOP[1], _TAIL_BOTTOM[1], _TAIL_BOTTOM[0]])
_TAIL_TIP_START = 0.68
_TAIL_TIP = np.array([
    _lerp(*_TAIL_TOP, _TAIL_TIP_START), _TAIL_TOP[1], _TAIL_BOTTOM[1],
    _lerp(*_TAIL_BOTTOM, _TAIL_TIP_START)
])
_LEGS = (np.array([[0.08, 0.22], [0.10, 0.44]]),
         np.array([[-0.06, 0.23], [-0.08, 0.44]]))
_LEG_WIDTH = 0.035

_CRESTS: Dict[str, List[np.ndarray]] = {
    'spike': [np.array([[0.38, -0.31], [0.53, -0.33], [0.34, -0.66]])],
    'double': [
        np.array([[0.35, -0.31], [0.44, -0.35], [0.29, -0.61]]),
        np.array([[0.45, -0.35], [0.55, -0.32], [0.50, -0.65]]),
    ],
    'round': [_ellipse(0.45, -0.33, 0.12, 0.15, n=13, start=np.pi,
                       stop=2 * np.pi, closed=False)],
    'fan': [
        _thin_spike(np.array([0.44, -0.33]), (0.27, -0.55), 0.03),
        _thin_spike(np.array([0.45, -0.34]), (0.42, -0.64), 0.03),
        _thin_spike(np.array([0.46, -0.33]), (0.60, -0.58), 0.03),
    ],
}


def _wing_pattern(pattern: str) -> List[np.ndarray]:
    """Polygons of the wing-patch pattern, drawn over the patch colour."""
    x0, y0, x1, y1 = _PATCH_BOX
    width, height = x1 - x0, y1 - y0
    if pattern == 'plain':
        return []
    if pattern == 'bars':  # two bars along the body axis
        return [_rect(x0, y0 + height * f, x1, y0 + height * (f + 0.2))
                for f in (0.2, 0.6)]
    if pattern == 'stripes':  # three bars across the body axis
        return [_rect(x0 + width * f, y0, x0 + width * (f + 0.14), y1)
                for f in (0.14, 0.43, 0.72)]
    if pattern == 'spot':  # one round spot in the middle
        return [_ellipse(x0 + width / 2, y0 + height / 2, 0.055, 0.055, n=12)]
    raise ValueError(f'unknown wing pattern {pattern!r}')


_WING_PATTERNS = {p: _wing_pattern(p) for p in PART_ATTRIBUTES['wing']}

_LEG_POLYGONS = [_thick_line(start, end, _LEG_WIDTH) for start, end in _LEGS]

# Points about which part_scale enlarges each part: where it joins the body.
_PART_ANCHORS = {
    'beak': np.array([0.62, -0.19]),
    'crown': np.array([0.45, -0.33]),
    'eye': np.array([0.55, -0.25]),
    'wing': np.array([(_PATCH_BOX[0] + _PATCH_BOX[2]) / 2,
                      (_PATCH_BOX[1] + _PATCH_BOX[3]) / 2]),
    'tail': np.array(_lerp(_lerp(*_TAIL_TOP, _TAIL_TIP_START),
                           _lerp(*_TAIL_BOTTOM, _TAIL_TIP_START), 0.5)),
}


def _scaled_about(points: np.ndarray, part: str, part_scale: float) -> np.ndarray:
    anchor = _PART_ANCHORS[part]
    return anchor + (np.asarray(points) - anchor) * part_scale


# Keypoints written to part_locs.txt, one per entry of PART_NAMES.
_PART_KEYPOINTS = np.array([
    np.mean(_BEAK, axis=0),  # beak
    [0.46, -0.38],  # crown: on every crest shape, just above the head
    [0.55, -0.25],  # eye
    np.mean(_PATCH, axis=0),  # wing
    np.mean(_TAIL_TIP, axis=0),  # tail
])
_NO_PART = -1


# ----------------------------------------------------------------------------
# Rendering: polygons are drawn on a canvas _SUPERSAMPLE times the image size.
# ----------------------------------------------------------------------------
def _hsv_colour(hue: float, saturation: float,
                value: float) -> Tuple[int, int, int]:
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
    return int(255 * red + 0.5), int(255 * green + 0.5), int(255 * blue + 0.5)


def _muted_colour(rng: np.random.Generator, low_value: float = 0.35,
                  high_value: float = 0.75,
                  hue_range: Optional[Tuple[float, float]] = None
                  ) -> Tuple[int, int, int]:
    """A low-saturation colour, far from the saturated part palette."""
    hue, saturation, value = rng.random(3).tolist()
    if hue_range is not None:
        hue = hue_range[0] + (hue_range[1] - hue_range[0]) * hue
    return _hsv_colour(hue, 0.15 + 0.35 * saturation,
                       low_value + (high_value - low_value) * value)


def _contrast_colour(colour: Sequence[int]) -> Tuple[int, int, int]:
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return PALETTE['black'] if luminance > 140 else PALETTE['white']


def _scaled(colour: Sequence[int], factor: float) -> Tuple[int, int, int]:
    return tuple(min(255, int(c * factor + 0.5)) for c in colour)


def _rotation(angle: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, -sin], [sin, cos]])


def _background(rng: np.random.Generator, canvas_size: int) -> Image.Image:
    """A smooth gradient between four muted corner colours."""
    corners = Image.new('RGB', (2, 2))
    corners.putdata([_muted_colour(rng, 0.3, 0.9) for _ in range(4)])
    # Interpolating at a quarter of the size is 5x faster and looks the same.
    small_size = max(2, canvas_size // 4)
    small = corners.resize((small_size, small_size), Image.BILINEAR)
    return small.resize((canvas_size, canvas_size), Image.NEAREST)


def _padded(points: np.ndarray, num_vertices: int = 16) -> np.ndarray:
    """Repeat the last vertex up to num_vertices (the polygon stays the same)."""
    padding = np.repeat(points[-1:], num_vertices - len(points), axis=0)
    return np.vstack([points, padding])


# Clutter shapes in a unit box, padded to one vertex count so that a whole
# image's clutter is placed by one product.
_CLUTTER_TEMPLATES = np.stack([
    _padded(_ellipse(0, 0, 0.5, 0.5, n=16)),  # ellipse, stretched
    _padded(_rect(-0.5, -0.5, 0.5, 0.5)),  # rectangle, stretched
    _padded(np.zeros((3, 2))),  # triangle, random vertices
    _padded(_rect(-0.6, -0.04, 0.6, 0.04)),  # twig
    _padded(np.array([[-0.5, -0.22], [-0.5, 0.22], [0.5, 0.0]])),  # beak-like
    _padded(_ellipse(0, 0, 0.5, 0.5, n=10)),  # eye-like dot
    _padded(_rect(-0.5, -0.25, 0.5, 0.25)),  # wing-patch-like, striped
])
_CLUTTER_TRIANGLE, _CLUTTER_STRIPED = 2, 6
_CLUTTER_STRETCHED = np.array([1, 1, 0, 0, 0, 0, 0], dtype=bool)
# Part-like clutter stays about as small as the parts it imitates.
_CLUTTER_MAX_SIZE = np.array([0.3, 0.3, 0.3, 0.3, 0.1, 0.06, 0.15])
# Without part-like clutter: triangle and beak-like -> rectangle, dot ->
# ellipse, striped patch -> rectangle. The same random draws are made either
# way, so the bird of an image does not change with the clutter.
_PLAIN_CLUTTER_KIND = np.array([0, 1, 1, 3, 1, 0, 1])
_CLUTTER_STRIPES = np.vstack(
    [_rect(f - 0.06, -0.25, f + 0.06, 0.25) for f in (-0.3, 0.0, 0.3)])


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator,
                  img_size: int, part_like: bool = True) -> None:
    """Random shapes behind the bird, some of them part-like unless
    ``part_like`` is False (then no part-like shape and no part colour)."""
    num_shapes = int(rng.integers(16, 29))
    kinds = rng.integers(len(_CLUTTER_TEMPLATES), size=num_shapes)
    if not part_like:
        kinds = _PLAIN_CLUTTER_KIND[kinds]
    sizes = np.exp(rng.uniform(np.log(0.04), np.log(0.3), size=num_shapes))
    sizes = np.minimum(sizes, _CLUTTER_MAX_SIZE[kinds]) * img_size
    centres = rng.uniform(-0.05, 1.05, size=(num_shapes, 2)) * img_size
    angles = rng.uniform(0, 2 * np.pi, size=num_shapes)
    stretches = rng.uniform(0.2, 1.0, size=num_shapes)
    triangles = rng.uniform(-0.5, 0.5, size=(num_shapes, 3, 2))
    # Half of the clutter uses the part colours, so colour alone is no cue.
    use_palette = (rng.random(num_shapes) < 0.5).tolist()
    if not part_like:
        use_palette = [False] * num_shapes
    palette_index = rng.integers(len(_PALETTE_COLOURS), size=num_shapes).tolist()
    hsv = rng.random((num_shapes, 3)) * [1, 0.35, 0.65] + [0, 0.15, 0.25]

    shapes = _CLUTTER_TEMPLATES[kinds]
    shapes[:, :, 1] *= np.where(_CLUTTER_STRETCHED[kinds], stretches, 1.0)[:, None]
    is_triangle = kinds == _CLUTTER_TRIANGLE
    shapes[is_triangle, :3] = triangles[is_triangle]
    shapes[is_triangle, 3:] = triangles[is_triangle, 2:]
    cos, sin = np.cos(angles) * sizes, np.sin(angles) * sizes
    # Row vectors times the transposed linear maps: [[cos, sin], [-sin, cos]].
    linear_t = np.stack([np.stack([cos, sin], 1), np.stack([-sin, cos], 1)], 1)
    shapes_xy = (shapes @ linear_t + centres[:, None]) * _SUPERSAMPLE
    stripes_xy = (_CLUTTER_STRIPES @ linear_t + centres[:, None]) * _SUPERSAMPLE
    for i, kind in enumerate(kinds.tolist()):
        colour = (_PALETTE_COLOURS[palette_index[i]]
                  if use_palette[i] else _hsv_colour(*hsv[i].tolist()))
        draw.polygon(shapes_xy[i].ravel().tolist(), fill=colour)
        if kind == _CLUTTER_STRIPED:
            flat = stripes_xy[i].ravel().tolist()
            for start in range(0, len(flat), 8):  # 4 vertices per stripe
                draw.polygon(flat[start:start + 8], fill=_contrast_colour(colour))


def _bird_polygons(attributes: Dict[str, str],
                   rng: np.random.Generator,
                   part_scale: float = 1.0,
                   body_hue: Optional[Tuple[float, float]] = None) -> List[Tuple]:
    """The bird's polygons in its own frame, in drawing order.

    Args:
        attributes (dict): value of each informative part.
        rng (np.random.Generator): source of the nuisance colours.
        part_scale (float): the beak, crest, wing patch and tail tip are
            enlarged by this factor about where they join the body.
        body_hue (tuple, optional): (low, high) range of the body colour's hue
            in [0, 1); any hue when None.

    Returns:
        list[tuple]: ``(points (V, 2), colour, part index or _NO_PART)``.
    """
    body_colour = _muted_colour(rng, hue_range=body_hue)
    # Patch and crest colours are random: only the pattern and shape count.
    patch_colour = _PALETTE_COLOURS[rng.integers(len(_PALETTE_COLOURS))]
    crest_colour = _PALETTE_COLOURS[rng.integers(len(_PALETTE_COLOURS))]
    leg_colour = _muted_colour(rng, 0.15, 0.35)
    beak, crown, eye, wing, tail = range(len(PART_NAMES))
    pattern_colour = _contrast_colour(patch_colour)

    def grown(points: np.ndarray, part: str) -> np.ndarray:
        return _scaled_about(points, part, part_scale)

    return [
        (_TAIL, _scaled(body_colour, 0.85), _NO_PART),
        (grown(_TAIL_TIP, 'tail'), PALETTE[attributes['tail']], tail),
        *[(leg, leg_colour, _NO_PART) for leg in _LEG_POLYGONS],
        (_BODY, body_colour, _NO_PART),
        (_WING, _scaled(body_colour, 0.7), _NO_PART),
        (grown(_PATCH, 'wing'), patch_colour, wing),
        *[(grown(stripe, 'wing'), pattern_colour, _NO_PART)
          for stripe in _WING_PATTERNS[attributes['wing']]],
        (_HEAD, _scaled(body_colour, 1.1), _NO_PART),
        *[(grown(crest, 'crown'), crest_colour, crown)
          for crest in _CRESTS[attributes['crown']]],
        (_EYE_RING, PALETTE['white'], eye),
        (_EYE_PUPIL, PALETTE['black'], _NO_PART),
        (grown(_BEAK, 'beak'), PALETTE[attributes['beak']], beak),
    ]


def _polygon_pixels(polygons: List[np.ndarray]) -> np.ndarray:
    """Image-pixel coordinates of the canvas pixel centres inside polygons."""
    points = np.concatenate(polygons) * _SUPERSAMPLE
    origin = np.floor(points.min(0))
    width, height = (np.ceil(points.max(0)) - origin + 1).astype(int).tolist()
    mask = Image.new('L', (width, height))
    draw = ImageDraw.Draw(mask)
    for polygon in polygons:
        draw.polygon((polygon * _SUPERSAMPLE - origin).ravel().tolist(), fill=255)
    rows, cols = np.nonzero(np.asarray(mask))
    return (np.stack([cols, rows], 1) + origin + 0.5) / _SUPERSAMPLE


def _part_visibility(rng: np.random.Generator, draw: ImageDraw.ImageDraw,
                     object_xyxy: np.ndarray, part_regions: List[List[np.ndarray]],
                     keypoints: np.ndarray, img_size: int) -> np.ndarray:
    """Sometimes draw a branch over the bird; return which parts stay visible.

    A part is visible as in CUB when its keypoint shows, clearing the branch by
    an image pixel so that the pixel under it is the part's; we also require
    that the branch covers less than _OCCLUDED_FRACTION of the part.
    """
    part_visible = np.ones(len(PART_NAMES), dtype=bool)
    if rng.random() >= _OCCLUDER_PROB:
        return part_visible
    centre = rng.uniform(object_xyxy[:2], object_xyxy[2:])
    half_width = img_size * rng.uniform(0.02, 0.035)
    angle = rng.uniform(0, np.pi)
    # Twice the image long, so it crosses the whole image wherever it is.
    branch = _rect(-img_size, -half_width, img_size, half_width)
    branch = branch @ _rotation(angle).T + centre
    colour = _muted_colour(rng, 0.2, 0.5)
    draw.polygon((branch * _SUPERSAMPLE).ravel().tolist(), fill=colour)

    normal = np.array([-np.sin(angle), np.cos(angle)])
    for i, polygons in enumerate(part_regions):
        if abs((keypoints[i] - centre) @ normal) <= half_width + 1:
            part_visible[i] = False
            continue
        offsets = (np.concatenate(polygons) - centre) @ normal
        if offsets.min() > half_width or offsets.max() < -half_width:
            continue  # the part lies wholly on one side of the branch
        pixel_offsets = (_polygon_pixels(polygons) - centre) @ normal
        covered = np.mean(np.abs(pixel_offsets) <= half_width)
        part_visible[i] = covered < _OCCLUDED_FRACTION
    return part_visible


def render_bird(attributes: Dict[str, str], img_size: int,
                rng: np.random.Generator, part_scale: float = 1.0,
                body_hue: Optional[Tuple[float, float]] = None,
                facing: Optional[int] = None,
                part_like_clutter: bool = True) -> Tuple[Image.Image, Dict]:
    """Draw one image of a class.

    Args:
        attributes (dict[str, str]): Value of each informative part, an entry
            of :func:`class_part_attributes`.
        img_size (int): Side of the square image in pixels.
        rng (np.random.Generator): Source of every nuisance variable.
        part_scale (float): enlargement of the four informative parts about
            where they join the body. Defaults to 1.0.
        body_hue (tuple, optional): (low, high) hue range of the body colour;
            any hue when None (the generic set's labels fix it).
        facing (int, optional): +1 beak to the right, -1 to the left; random
            when None.
        part_like_clutter (bool): False draws the clutter without part-like
            shapes and part colours. Defaults to True.

    Returns:
        tuple[PIL.Image.Image, dict]: The RGB image (``img_size`` square) and
        its annotation in pixels: ``bbox_xyxy`` (4,) the object box;
        ``part_xy`` (P, 2) the part keypoints; ``part_visible`` (P,) bools;
        ``part_boxes_xyxy`` (P, 4) the part regions, P = len(PART_NAMES).
    """
    canvas_size = img_size * _SUPERSAMPLE
    image = _background(rng, canvas_size)
    draw = ImageDraw.Draw(image)
    _draw_clutter(draw, rng, img_size, part_like_clutter)

    # Pose: flip, then rotate and scale, then shift to a random place inside.
    flip = -1.0 if rng.random() < 0.5 else 1.0
    if facing is not None:
        flip = float(facing)
    scale = img_size * rng.uniform(0.28, 0.42)
    linear = _rotation(rng.uniform(-0.7, 0.7)) @ np.diag([flip, 1.0]) * scale
    polygons = _bird_polygons(attributes, rng, part_scale, body_hue)
    lengths = [len(points) for points, _, _ in polygons]
    num_drawn = sum(lengths)
    keypoints = np.stack([_scaled_about(xy, part, part_scale)
                          for xy, part in zip(_PART_KEYPOINTS, PART_NAMES)])
    # The keypoints ride along at the end, undrawn.
    points = np.concatenate([p for p, _, _ in polygons] + [keypoints])
    points = points @ linear.T
    low, high = points[:num_drawn].min(0), points[:num_drawn].max(0)
    margin = 0.02 * img_size
    points += rng.uniform(margin - low, img_size - margin - high)

    flat = (points[:num_drawn] * _SUPERSAMPLE).ravel().tolist()
    part_regions = [[] for _ in PART_NAMES]
    start = 0
    for (_, colour, part), length in zip(polygons, lengths):
        draw.polygon(flat[2 * start:2 * (start + length)], fill=colour)
        if part != _NO_PART:
            part_regions[part].append(points[start:start + length])
        start += length

    object_xyxy = np.concatenate([points[:num_drawn].min(0),
                                  points[:num_drawn].max(0)])
    keypoints = points[num_drawn:]
    part_visible = _part_visibility(rng, draw, object_xyxy, part_regions,
                                    keypoints, img_size)
    part_points = [np.concatenate(polygons) for polygons in part_regions]
    part_boxes = np.array([[*p.min(0), *p.max(0)] for p in part_points])
    annotation = dict(
        bbox_xyxy=object_xyxy,
        part_xy=keypoints,
        part_visible=part_visible,
        part_boxes_xyxy=part_boxes)
    return image.reduce(_SUPERSAMPLE), annotation


def image_rng(seed: int, image_id: int) -> np.random.Generator:
    """The random generator of one image, independent of the others."""
    return np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(_IMAGE_STREAM, image_id)))


def _render_job(job: Tuple) -> Tuple[int, Dict]:
    """Draw one image, save it as JPEG and return its annotation.

    ``attributes`` None draws a generic image: its part attributes are random
    and ``render_kwargs`` fix the body hue and facing from its label.
    """
    image_id, attributes, img_size, seed, path, jpeg_quality, render_kwargs = job
    rng = image_rng(seed, image_id)
    if attributes is None:
        attributes = {part: values[rng.integers(len(values))]
                      for part, values in PART_ATTRIBUTES.items()}
    image, annotation = render_bird(attributes, img_size, rng, **render_kwargs)
    # 4:4:4 chroma keeps the colour of parts a few pixels wide.
    image.save(path, format='JPEG', quality=jpeg_quality, subsampling=0)
    return image_id, annotation


# ----------------------------------------------------------------------------
# Writing the set
# ----------------------------------------------------------------------------
def _prepare_out_dir(out_dir: str, overwrite: bool) -> None:
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise NotADirectoryError(f'out_dir {out_dir!r} exists and is a file')
    if osp.isdir(out_dir) and os.listdir(out_dir):
        if not overwrite:
            raise FileExistsError(
                f'out_dir {out_dir!r} exists and is not empty; pass '
                'overwrite=True to replace the data set in it')
        # Remove only what this generator writes, never foreign files.
        for name in DIR_NAMES:
            shutil.rmtree(osp.join(out_dir, name), ignore_errors=True)
        for name in FILE_NAMES:
            if osp.isfile(osp.join(out_dir, name)):
                os.remove(osp.join(out_dir, name))
    os.makedirs(osp.join(out_dir, 'parts'), exist_ok=True)


def _write_lines(path: str, lines: List[str]) -> None:
    with open(path, 'w', newline='\n') as f:
        f.write(''.join(line + '\n' for line in lines))


def _fmt(values) -> str:
    return ' '.join(f'{float(v):.1f}' for v in values)


def _fmt_box(box_xyxy: np.ndarray, as_xywh: bool = False) -> str:
    """A box rounded outwards to 0.1 px, so that it keeps what it contains."""
    low = np.floor(np.asarray(box_xyxy[:2]) * 10 + 1e-6).astype(int)
    high = np.ceil(np.asarray(box_xyxy[2:]) * 10 - 1e-6).astype(int)
    if as_xywh:
        high = high - low
    return ' '.join(f'{v / 10:.1f}' for v in [*low, *high])


def make_synthetic_fgvc(out_dir: str,
                        num_classes: int = 20,
                        train_per_class: int = 30,
                        test_per_class: int = 20,
                        img_size: int = 128,
                        seed: int = 0,
                        num_workers: Optional[int] = None,
                        jpeg_quality: int = 90,
                        overwrite: bool = False,
                        part_scale: float = 1.0,
                        part_like_clutter: bool = True) -> Dict:
    """Write a synthetic fine-grained set in CUB-200-2011's layout.

    Images are ordered by class; within a class the first ``train_per_class``
    are the training split.

    Args:
        out_dir (str): Root of the set (the ``data_root`` of mmpretrain's CUB).
        num_classes (int): Number of classes, in [2, ``MAX_NUM_CLASSES``].
            Defaults to 20.
        train_per_class (int): Training images per class, >= 1. Defaults to 30.
        test_per_class (int): Test images per class, >= 0. Defaults to 20.
        img_size (int): Side of the square images in pixels, in [32, 4096].
            Defaults to 128.
        seed (int): Seed of the class table and of every image. Defaults to 0.
        num_workers (int, optional): Processes that draw images; 1 draws in
            this process. The output does not depend on it. Defaults to
            ``min(2, os.cpu_count())``.
        jpeg_quality (int): JPEG quality, in [1, 95]. Defaults to 90.
        overwrite (bool): Replace the set in a non-empty ``out_dir`` (its other
            files are kept). Defaults to False, which raises
            ``FileExistsError`` for a non-empty ``out_dir``.
        part_scale (float): enlargement of the four informative parts about
            where they join the body, in [0.5, 3]. 1.0 (default) draws each
            under about 2.5 % of the image; 2.0 makes them about 1/4 of the
            bird's length, like CUB's head or tail relative to the bird.
        part_like_clutter (bool): True (default) paints part-like shapes in
            the part colours into the clutter, so that a part seen out of
            context does not give its value away; False leaves them out, and
            each image's bird is the same as with True.

    Returns:
        dict: ``data_root``, ``num_classes``, ``num_train``, ``num_test``,
        ``num_images``, ``img_size``, ``seed``, ``num_workers``, ``elapsed_s``
        and ``images_per_s`` (over the whole call).
    """
    start = time.perf_counter()
    _check_int('num_classes', num_classes, 2, MAX_NUM_CLASSES)
    _check_set_args(train_per_class, test_per_class, img_size, seed, jpeg_quality,
                    part_scale)
    table = class_part_attributes(num_classes, seed)
    class_dirs = [class_dir_name(k + 1, attrs) for k, attrs in enumerate(table)]
    if not isinstance(part_like_clutter, bool):
        raise TypeError(f'part_like_clutter must be a bool, got {part_like_clutter!r}')
    render_kwargs = [dict(part_scale=part_scale,
                          part_like_clutter=part_like_clutter)] * num_classes
    info = _write_set(out_dir, class_dirs, table, render_kwargs, train_per_class,
                      test_per_class, img_size, seed, num_workers, jpeg_quality,
                      overwrite)
    attribute_lines = [
        f'{k + 1} {PART_NAMES.index(part) + 1} {value}'
        for k, attrs in enumerate(table) for part, value in attrs.items()
    ]
    _write_lines(osp.join(out_dir, 'parts', 'class_part_attributes.txt'),
                 attribute_lines)
    return dict(info, elapsed_s=time.perf_counter() - start,
                images_per_s=info['num_images'] / (time.perf_counter() - start))


def _check_set_args(train_per_class: int, test_per_class: int, img_size: int,
                    seed: int, jpeg_quality: int, part_scale: float) -> None:
    """The arguments both set writers share, checked before anything is written."""
    _check_int('train_per_class', train_per_class, 1)
    _check_int('test_per_class', test_per_class, 0)
    _check_int('img_size', img_size, 32, 4096)
    _check_int('seed', seed, 0)
    _check_int('jpeg_quality', jpeg_quality, 1, 95)
    if not isinstance(part_scale, (int, float)) or not 0.5 <= part_scale <= 3.0:
        raise ValueError(f'part_scale must be a number in [0.5, 3], got {part_scale!r}')


# The generic set's classes: body hue family x facing. Neither is a function of
# the fine-grained part attributes, which are drawn at random in every image.
GENERIC_HUES: Tuple[Tuple[str, Tuple[float, float]], ...] = (
    ('red', (0.95, 1.05)), ('yellow', (0.12, 0.2)), ('green', (0.28, 0.42)),
    ('cyan', (0.45, 0.55)), ('blue', (0.6, 0.7)), ('purple', (0.75, 0.85)))
GENERIC_FACINGS: Tuple[Tuple[str, int], ...] = (('right', 1), ('left', -1))


def generic_classes() -> List[Tuple[str, Dict]]:
    """(class folder name, render kwargs) of each generic class."""
    classes = []
    for hue_name, hue_range in GENERIC_HUES:
        for facing_name, facing in GENERIC_FACINGS:
            name = f'{len(classes) + 1:03d}.{hue_name.capitalize()}_body_facing_{facing_name}'
            classes.append((name, dict(body_hue=hue_range, facing=facing)))
    return classes


def make_synthetic_generic(out_dir: str,
                           train_per_class: int = 100,
                           test_per_class: int = 10,
                           img_size: int = 64,
                           seed: int = 1000,
                           num_workers: Optional[int] = None,
                           jpeg_quality: int = 90,
                           overwrite: bool = False,
                           part_scale: float = 1.0) -> Dict:
    """Write the generic pretraining set: the role ImageNet plays for CUB.

    The same drawing (bird on clutter, CUB layout) with other labels: each of
    the 12 classes is a body-hue family (red, yellow, green, cyan, blue,
    purple) and a facing (beak right or left). The four informative part
    attributes of the fine-grained set are drawn uniformly at random in every
    image, so no generic label is a function of them; a network pretrained on
    this set learns colours, shapes and the body plan, not the fine-grained
    classes. Arguments as in :func:`make_synthetic_fgvc`; use another seed
    than the fine-grained set's so that no image is shared.

    Returns:
        dict: as :func:`make_synthetic_fgvc`.
    """
    start = time.perf_counter()
    _check_set_args(train_per_class, test_per_class, img_size, seed, jpeg_quality,
                    part_scale)
    classes = generic_classes()
    render_kwargs = [dict(kwargs, part_scale=part_scale) for _, kwargs in classes]
    info = _write_set(out_dir, [name for name, _ in classes], [None] * len(classes),
                      render_kwargs, train_per_class, test_per_class, img_size, seed,
                      num_workers, jpeg_quality, overwrite)
    return dict(info, elapsed_s=time.perf_counter() - start,
                images_per_s=info['num_images'] / (time.perf_counter() - start))


def _write_set(out_dir: str, class_dirs: List[str],
               attributes: List[Optional[Dict[str, str]]],
               render_kwargs: List[Dict], train_per_class: int,
               test_per_class: int, img_size: int, seed: int,
               num_workers: Optional[int], jpeg_quality: int,
               overwrite: bool) -> Dict:
    """Draw and write every image and the CUB files of a set."""
    num_classes = len(class_dirs)
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    _check_int('num_workers', num_workers, 1)
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f'out_dir must be a path, got {out_dir!r}')
    out_dir = os.fspath(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    per_class = train_per_class + test_per_class
    jobs, image_lines, label_lines, split_lines = [], [], [], []
    for label, class_dir in enumerate(class_dirs):
        os.makedirs(osp.join(out_dir, 'images', class_dir), exist_ok=True)
        for index in range(per_class):
            image_id = label * per_class + index + 1
            rel_path = f'{class_dir}/{class_dir[4:]}_{image_id:06d}.jpg'
            is_train = int(index < train_per_class)
            image_lines.append(f'{image_id} {rel_path}')
            label_lines.append(f'{image_id} {label + 1}')
            split_lines.append(f'{image_id} {is_train}')
            jobs.append((image_id, attributes[label], img_size, seed,
                         osp.join(out_dir, 'images', rel_path), jpeg_quality,
                         render_kwargs[label]))

    num_workers = min(num_workers, len(jobs))
    if num_workers == 1:
        results = [_render_job(job) for job in jobs]
    else:
        # fork: a spawned worker would re-import mmdaf (torch, mmdet) first.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context(
            'fork' if 'fork' in methods else None)
        chunksize = max(1, len(jobs) // (num_workers * 8))
        with context.Pool(num_workers) as pool:
            results = pool.map(_render_job, jobs, chunksize=chunksize)

    box_lines, loc_lines, part_box_lines = [], [], []
    for image_id, annotation in results:
        box_lines.append(
            f'{image_id} {_fmt_box(annotation["bbox_xyxy"], as_xywh=True)}')
        for part_index, (xy, visible, box) in enumerate(
                zip(annotation['part_xy'], annotation['part_visible'],
                    annotation['part_boxes_xyxy'])):
            part_id = part_index + 1
            loc_lines.append(f'{image_id} {part_id} {_fmt(xy)} {int(visible)}')
            part_box_lines.append(f'{image_id} {part_id} {_fmt_box(box)}')

    _write_lines(osp.join(out_dir, 'images.txt'), image_lines)
    _write_lines(osp.join(out_dir, 'image_class_labels.txt'), label_lines)
    _write_lines(osp.join(out_dir, 'train_test_split.txt'), split_lines)
    _write_lines(osp.join(out_dir, 'classes.txt'),
                 [f'{k + 1} {name}' for k, name in enumerate(class_dirs)])
    _write_lines(osp.join(out_dir, 'bounding_boxes.txt'), box_lines)
    _write_lines(osp.join(out_dir, 'parts', 'parts.txt'),
                 [f'{i + 1} {name}' for i, name in enumerate(PART_NAMES)])
    _write_lines(osp.join(out_dir, 'parts', 'part_locs.txt'), loc_lines)
    _write_lines(osp.join(out_dir, 'parts', 'part_boxes.txt'), part_box_lines)

    return dict(
        data_root=osp.abspath(out_dir),
        num_classes=num_classes,
        num_train=num_classes * train_per_class,
        num_test=num_classes * test_per_class,
        num_images=len(jobs),
        img_size=img_size,
        seed=seed,
        num_workers=num_workers)
