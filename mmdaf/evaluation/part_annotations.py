"""CUB part annotations and their geometry in the network input.

Shared by the part metrics (``PartHitRate``, ``PartCoverage``). CUB-200-2011
annotates 15 part keypoints per image in ``parts/part_locs.txt``
(``<image_id> <part_id> <x> <y> <visible>``, original image pixels) and names
the images in ``images.txt`` (``<image_id> <relative path>``); the synthetic
sets add part regions in ``parts/part_boxes.txt``
(``<image_id> <part_id> <x1> <y1> <x2> <y2>``).

Every function that can raise takes ``metric``, the name that starts its error
messages, so that an error says which metric read the file.
"""
import os.path as osp
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

IMAGES_FILE = 'images.txt'
PART_LOCS_FILE = osp.join('parts', 'part_locs.txt')
PART_BOXES_FILE = osp.join('parts', 'part_boxes.txt')
MODES = ('keypoints', 'regions')
CROPS = ('center', 'none')
FLIP_AXES = {'horizontal': (True, False), 'vertical': (False, True),
             'diagonal': (True, True)}
DEFAULT_NAME = 'part annotations'


# ----------------------------------------------------------------------------
# Annotation files
# ----------------------------------------------------------------------------
def _rows(path: str, num_fields: int, layout: str,
          metric: str) -> Iterator[Tuple[int, List[str]]]:
    """``(line number, fields)`` of each non-blank line of a whitespace table.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a line has not ``num_fields`` fields (``layout`` says which).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{metric}: {path} not found')
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != num_fields:
                raise ValueError(f'{metric}: {path}:{line_no}: expected "{layout}", '
                                 f'got {line.rstrip()!r}')
            yield line_no, fields


def _number(path: str, line_no: int, value: str, kind: type, what: str, metric: str):
    """``kind(value)``, or a ValueError naming the file, line, field and value."""
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f'{metric}: {path}:{line_no}: {what} must be '
                         f'{kind.__name__}, got {value!r}') from None
    if not np.isfinite(number):
        raise ValueError(f'{metric}: {path}:{line_no}: {what} must be finite, '
                         f'got {value!r}')
    return number


def read_image_paths(path: str, metric: str = DEFAULT_NAME) -> Dict[str, int]:
    """Relative image path -> image id, from CUB's ``images.txt``.

    Args:
        path (str): the ``images.txt`` file.
        metric (str): the name that starts error messages.

    Returns:
        dict: ``'<class dir>/<file>' -> image id``, paths with ``/`` separators.
    """
    image_ids: Dict[str, int] = {}
    layout = '<image_id> <relative path>'
    for line_no, (id_text, rel_path) in _rows(path, 2, layout, metric):
        image_id = _number(path, line_no, id_text, int, 'image_id', metric)
        rel_path = rel_path.replace('\\', '/')
        if rel_path in image_ids:
            raise ValueError(f'{metric}: {path}:{line_no}: {rel_path!r} is listed '
                             f'twice (also as image {image_ids[rel_path]})')
        image_ids[rel_path] = image_id
    return image_ids


def read_part_locs(path: str, metric: str = DEFAULT_NAME
                   ) -> Dict[int, Dict[int, Tuple[float, float, bool]]]:
    """Part keypoints of each image, from CUB's ``parts/part_locs.txt``.

    Args:
        path (str): the ``part_locs.txt`` file.
        metric (str): the name that starts error messages.

    Returns:
        dict: image id -> {part id -> (x, y, visible)}, x and y in original
        image pixels.
    """
    locs: Dict[int, Dict[int, Tuple[float, float, bool]]] = {}
    layout = '<image_id> <part_id> <x> <y> <visible>'
    for line_no, fields in _rows(path, 5, layout, metric):
        image_id = _number(path, line_no, fields[0], int, 'image_id', metric)
        part_id = _number(path, line_no, fields[1], int, 'part_id', metric)
        x = _number(path, line_no, fields[2], float, 'x', metric)
        y = _number(path, line_no, fields[3], float, 'y', metric)
        visible = _number(path, line_no, fields[4], int, 'visible', metric)
        if visible not in (0, 1):
            raise ValueError(f'{metric}: {path}:{line_no}: visible must be 0 or 1, '
                             f'got {fields[4]!r}')
        locs.setdefault(image_id, {})[part_id] = (x, y, bool(visible))
    return locs


def read_part_regions(path: str, metric: str = DEFAULT_NAME
                      ) -> Dict[int, Dict[int, Tuple[float, ...]]]:
    """Part regions of each image, from mmdaf's ``parts/part_boxes.txt``.

    Args:
        path (str): the ``part_boxes.txt`` file (a synthetic-set extension).
        metric (str): the name that starts error messages.

    Returns:
        dict: image id -> {part id -> (x1, y1, x2, y2)} in original image pixels.
    """
    regions: Dict[int, Dict[int, Tuple[float, ...]]] = {}
    layout = '<image_id> <part_id> <x1> <y1> <x2> <y2>'
    for line_no, fields in _rows(path, 6, layout, metric):
        image_id = _number(path, line_no, fields[0], int, 'image_id', metric)
        part_id = _number(path, line_no, fields[1], int, 'part_id', metric)
        box = tuple(_number(path, line_no, value, float, name, metric)
                    for value, name in zip(fields[2:], ('x1', 'y1', 'x2', 'y2')))
        if box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f'{metric}: {path}:{line_no}: need x1 <= x2 and '
                             f'y1 <= y2, got {" ".join(fields[2:])!r}')
        regions.setdefault(image_id, {})[part_id] = box
    return regions


def visible_keypoints(locs: Dict[int, Tuple[float, float, bool]]) -> np.ndarray:
    """(P, 2) xy of the visible keypoints of one image (P may be 0), one row
    per part id."""
    points = [(x, y) for x, y, visible in locs.values() if visible]
    return np.array(points, dtype=np.float64).reshape(-1, 2)


def visible_regions(regions: Dict[int, Tuple[float, ...]],
                    locs: Dict[int, Tuple[float, float, bool]]) -> np.ndarray:
    """(R, 4) xyxy regions of one image whose keypoint is marked visible, one
    row per part id.

    A region without a keypoint row counts as visible: ``part_boxes.txt`` has
    no visibility column of its own.
    """
    kept = [box for part_id, box in regions.items()
            if locs.get(part_id, (0.0, 0.0, True))[2]]
    return np.array(kept, dtype=np.float64).reshape(-1, 4)


def lookup_image_id(img_path: str, image_ids: Dict[str, int]) -> Optional[int]:
    """The id of the ``images.txt`` entry that ``img_path`` ends with.

    The longest matching tail wins, so that equal file names in different class
    folders stay apart; the data root may be spelt differently in the dataset
    config and in the metric's ``data_root``.
    """
    parts = img_path.replace('\\', '/').split('/')
    for start in range(len(parts)):
        image_id = image_ids.get('/'.join(parts[start:]))
        if image_id is not None:
            return image_id
    return None


# ----------------------------------------------------------------------------
# Data samples
# ----------------------------------------------------------------------------
def as_array(values) -> np.ndarray:
    """A tensor (any device) or array-like as a float64 array."""
    if hasattr(values, 'detach'):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def sample_image_id(sample, image_ids: Dict[str, int], images_path: str,
                    data_root: str, metric: str = DEFAULT_NAME) -> int:
    """The ``images.txt`` id of a data sample that carries ``part_boxes``.

    Args:
        sample (dict): the data sample with its metainfo (``img_path``,
            ``ori_shape`` and ``img_shape`` are required).
        image_ids (dict): relative image path -> id, see :func:`read_image_paths`.
        images_path (str): the ``images.txt`` file, for the error message.
        data_root (str): the metric's data root, for the error message.
        metric (str): the name that starts error messages.

    Returns:
        int: the image id.
    """
    for key in ('img_path', 'ori_shape', 'img_shape'):
        if key not in sample:
            raise KeyError(f'{metric}: a data sample with part_boxes has no '
                           f'{key!r} in its metainfo')
    img_path = sample['img_path']
    image_id = lookup_image_id(img_path, image_ids)
    if image_id is None:
        raise ValueError(f'{metric}: {img_path} is not listed in {images_path}; '
                         f'is data_root {data_root!r} the data set being evaluated?')
    return image_id


def sample_part_boxes(sample, metric: str = DEFAULT_NAME) -> np.ndarray:
    """(N, 4) xyxy ``part_boxes`` of a data sample, network-input pixels."""
    boxes = as_array(sample['part_boxes'])
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f'{metric}: part_boxes of {sample["img_path"]} must be '
                         f'(N, 4), got shape {tuple(boxes.shape)}')
    return boxes


# ----------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------
def _pair(value, name: str, metric: str) -> Tuple[float, float]:
    """A scalar or a 2-sequence as two floats (``scale_factor`` is (w, h))."""
    values = np.asarray(value, dtype=np.float64).reshape(-1)
    if values.size == 1:
        return float(values[0]), float(values[0])
    if values.size != 2:
        raise ValueError(f'{metric}: {name} must be a number or (w, h), got {value!r}')
    return float(values[0]), float(values[1])


def original_to_input(ori_shape: Sequence[int], img_shape: Sequence[int],
                      scale_factor=None, crop: str = 'center',
                      metric: str = DEFAULT_NAME) -> Tuple[np.ndarray, np.ndarray]:
    """Scale and offset that map original pixels into the network input.

    ``input_xy = original_xy * scale - offset``. With ``scale_factor`` (set by
    mmcv's ``Resize`` and mmpretrain's ``ResizeEdge``), the resized image is
    ``round(ori_shape * scale_factor)``; if ``img_shape`` is smaller, a crop
    followed and ``crop='center'`` places it as mmcv's ``CenterCrop`` does.
    Without ``scale_factor``, the whole original image is taken to have been
    resized to ``img_shape`` (identity when the shapes agree).

    Args:
        ori_shape (Sequence[int]): (H0, W0) of the loaded image.
        img_shape (Sequence[int]): (H, W) of the network input.
        scale_factor (float | Sequence[float], optional): (w, h) resize factors.
        crop (str): ``'center'`` or ``'none'`` (a crop is then an error).
        metric (str): the name that starts error messages.

    Returns:
        tuple: ``scale`` (2,) and ``offset`` (2,), both as (x, y).

    Raises:
        ValueError: ``img_shape`` is larger than the resized image (padding),
            or smaller with ``crop='none'``.
    """
    ori_h, ori_w = (int(v) for v in ori_shape[:2])
    height, width = (int(v) for v in img_shape[:2])
    if scale_factor is None:
        return np.array([width / ori_w, height / ori_h]), np.zeros(2)
    scale_w, scale_h = _pair(scale_factor, 'scale_factor', metric)
    resized_h, resized_w = int(round(ori_h * scale_h)), int(round(ori_w * scale_w))
    scale = np.array([scale_w, scale_h])
    if (height, width) == (resized_h, resized_w):
        return scale, np.zeros(2)
    shapes = (f'ori_shape {(ori_h, ori_w)} x scale_factor {(scale_w, scale_h)} = '
              f'{(resized_h, resized_w)}, img_shape {(height, width)}')
    if height > resized_h or width > resized_w:
        raise ValueError(f'{metric}: the input is larger than the resized image '
                         f'({shapes}); padding in the pipeline is not supported')
    if crop != 'center':
        raise ValueError(f'{metric}: the pipeline crops after resizing ({shapes}); '
                         "pass crop='center' if the crop is a CenterCrop")
    # mmcv's CenterCrop: offset = round((resized - crop) / 2) with Python's round.
    offset = np.array([int(round((resized_w - width) / 2.0)),
                       int(round((resized_h - height) / 2.0))], dtype=np.float64)
    return scale, offset


def flip_points(points_xy: np.ndarray, img_shape: Sequence[int], direction: str,
                metric: str = DEFAULT_NAME) -> np.ndarray:
    """Points mirrored as mmcv's ``RandomFlip`` mirrors an image.

    Args:
        points_xy (np.ndarray): (P, 2) points in the network input.
        img_shape (Sequence[int]): (H, W) of the network input.
        direction (str): ``'horizontal'``, ``'vertical'`` or ``'diagonal'``.
        metric (str): the name that starts error messages.

    Returns:
        np.ndarray: (P, 2) mirrored points.
    """
    if direction not in FLIP_AXES:
        raise ValueError(f'{metric}: unknown flip_direction {direction!r}, '
                         f'expected one of {sorted(FLIP_AXES)}')
    flip_x, flip_y = FLIP_AXES[direction]
    height, width = img_shape[:2]
    flipped = points_xy.copy()
    if flip_x:
        flipped[:, 0] = width - flipped[:, 0]
    if flip_y:
        flipped[:, 1] = height - flipped[:, 1]
    return flipped


def points_to_input(points_xy: np.ndarray, sample, crop: str = 'center',
                    metric: str = DEFAULT_NAME) -> np.ndarray:
    """Original-image points of a data sample mapped into its network input
    (resize, optional centre crop and flip from its metainfo; not cut).

    Args:
        points_xy (np.ndarray): (P, 2) points in original image pixels.
        sample (dict): the data sample with ``ori_shape``, ``img_shape`` and
            optionally ``scale_factor``, ``flip`` and ``flip_direction``.
        crop (str): ``'center'`` or ``'none'``, see :func:`original_to_input`.
        metric (str): the name that starts error messages.

    Returns:
        np.ndarray: (P, 2) points in network-input pixels.
    """
    img_shape = sample['img_shape']
    scale, offset = original_to_input(sample['ori_shape'], img_shape,
                                      sample.get('scale_factor'), crop, metric)
    points = points_xy.reshape(-1, 2) * scale - offset
    if sample.get('flip', False):
        points = flip_points(points, img_shape, sample.get('flip_direction')
                             or 'horizontal', metric)
    return points


def points_in_boxes(points_xy: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
    """Elementwise point-in-box test with broadcasting; edges count as inside.

    Args:
        points_xy (np.ndarray): (..., 2) points.
        boxes_xyxy (np.ndarray): (..., 4) boxes, broadcastable against the points.

    Returns:
        np.ndarray: (...) bool.
    """
    return ((points_xy[..., 0] >= boxes_xyxy[..., 0]) & (points_xy[..., 0] <= boxes_xyxy[..., 2])
            & (points_xy[..., 1] >= boxes_xyxy[..., 1]) & (points_xy[..., 1] <= boxes_xyxy[..., 3]))


def boxes_containing_points(boxes_xyxy: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    """Whether each box contains at least one point (edges count as inside).

    Args:
        boxes_xyxy (np.ndarray): (..., 4) boxes.
        points_xy (np.ndarray): (P, 2) points.

    Returns:
        np.ndarray: (...) bool; all False when P is 0.
    """
    return points_in_boxes(points_xy, boxes_xyxy[..., None, :]).any(axis=-1)


def box_centres_in_regions(boxes_xyxy: np.ndarray, regions_xyxy: np.ndarray) -> np.ndarray:
    """Whether each box's centre lies in at least one region (edges inside).

    Args:
        boxes_xyxy (np.ndarray): (..., 4) boxes.
        regions_xyxy (np.ndarray): (R, 4) regions.

    Returns:
        np.ndarray: (...) bool; all False when R is 0.
    """
    centres = (boxes_xyxy[..., None, :2] + boxes_xyxy[..., None, 2:]) / 2
    return points_in_boxes(centres, regions_xyxy).any(axis=-1)


def random_boxes_like(boxes_xyxy: np.ndarray, img_shape: Sequence[int], draws: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Boxes of the same widths and heights placed uniformly inside the image.

    A box of width w (clipped to the image width W) gets ``x1 ~ U(0, W - w)``,
    likewise for y.

    Args:
        boxes_xyxy (np.ndarray): (N, 4) boxes.
        img_shape (Sequence[int]): (H, W).
        draws (int): random boxes per box.
        rng (np.random.Generator): the random source.

    Returns:
        np.ndarray: (draws, N, 4) boxes.
    """
    height, width = img_shape[:2]
    box_w = np.clip(boxes_xyxy[:, 2] - boxes_xyxy[:, 0], 0, width)
    box_h = np.clip(boxes_xyxy[:, 3] - boxes_xyxy[:, 1], 0, height)
    x1 = rng.uniform(0, 1, (draws, len(box_w))) * (width - box_w)
    y1 = rng.uniform(0, 1, (draws, len(box_h))) * (height - box_h)
    return np.stack([x1, y1, x1 + box_w, y1 + box_h], axis=-1)


def points_inside(points_xy: np.ndarray, img_shape: Sequence[int]) -> np.ndarray:
    """The (P', 2) points that lie in the (H, W) image (a crop may cut some)."""
    height, width = img_shape[:2]
    keep = ((points_xy[:, 0] >= 0) & (points_xy[:, 0] <= width)
            & (points_xy[:, 1] >= 0) & (points_xy[:, 1] <= height))
    return points_xy[keep]


def regions_inside(regions_xyxy: np.ndarray, img_shape: Sequence[int]) -> np.ndarray:
    """The (R', 4) regions that overlap the (H, W) image, clipped to it."""
    height, width = img_shape[:2]
    keep = ((regions_xyxy[:, 2] >= 0) & (regions_xyxy[:, 0] <= width)
            & (regions_xyxy[:, 3] >= 0) & (regions_xyxy[:, 1] <= height))
    limits = np.array([width, height, width, height], dtype=np.float64)
    return np.clip(regions_xyxy[keep], 0, limits)


def check_metric_args(name: str, mode: str, crop: str, **positive_ints: int) -> None:
    """ValueErrors, prefixed with the metric's ``name``, for a ``mode`` or
    ``crop`` outside :data:`MODES` / :data:`CROPS` and for keyword values that
    are not positive ints (bools refused)."""
    if mode not in MODES:
        raise ValueError(f'{name}: mode must be one of {MODES}, got {mode!r}')
    if crop not in CROPS:
        raise ValueError(f'{name}: crop must be one of {CROPS}, got {crop!r}')
    for key, value in positive_ints.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f'{name}: {key} must be a positive int, got {value!r}')
