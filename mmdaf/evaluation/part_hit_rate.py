"""Part hit rate: how often DAF-net's proposed boxes land on annotated parts.

CUB-200-2011 annotates 15 part keypoints per image in ``parts/part_locs.txt``
(``<image_id> <part_id> <x> <y> <visible>``, original image pixels) and names the
images in ``images.txt`` (``<image_id> <relative path>``). A proposed box *hits*
when it contains at least one visible keypoint. The same share for boxes of the
same widths and heights placed uniformly at random in the image is the chance
level; a part proposal network that finds parts beats it.
"""
import os.path as osp
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from mmpretrain.registry import METRICS

IMAGES_FILE = 'images.txt'
PART_LOCS_FILE = osp.join('parts', 'part_locs.txt')
PART_BOXES_FILE = osp.join('parts', 'part_boxes.txt')
MODES = ('keypoints', 'regions')
CROPS = ('center', 'none')
FLIP_AXES = {'horizontal': (True, False), 'vertical': (False, True),
             'diagonal': (True, True)}


# ----------------------------------------------------------------------------
# Annotation files
# ----------------------------------------------------------------------------
def _rows(path: str, num_fields: int, layout: str) -> Iterator[Tuple[int, List[str]]]:
    """``(line number, fields)`` of each non-blank line of a whitespace table.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a line has not ``num_fields`` fields (``layout`` says which).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'PartHitRate: {path} not found')
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != num_fields:
                raise ValueError(f'PartHitRate: {path}:{line_no}: expected "{layout}", '
                                 f'got {line.rstrip()!r}')
            yield line_no, fields


def _number(path: str, line_no: int, value: str, kind: type, what: str):
    """``kind(value)``, or a ValueError naming the file, line, field and value."""
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f'PartHitRate: {path}:{line_no}: {what} must be '
                         f'{kind.__name__}, got {value!r}') from None
    if not np.isfinite(number):
        raise ValueError(f'PartHitRate: {path}:{line_no}: {what} must be finite, '
                         f'got {value!r}')
    return number


def read_image_paths(path: str) -> Dict[str, int]:
    """Relative image path -> image id, from CUB's ``images.txt``.

    Args:
        path (str): the ``images.txt`` file.

    Returns:
        dict: ``'<class dir>/<file>' -> image id``, paths with ``/`` separators.
    """
    image_ids: Dict[str, int] = {}
    for line_no, (id_text, rel_path) in _rows(path, 2, '<image_id> <relative path>'):
        image_id = _number(path, line_no, id_text, int, 'image_id')
        rel_path = rel_path.replace('\\', '/')
        if rel_path in image_ids:
            raise ValueError(f'PartHitRate: {path}:{line_no}: {rel_path!r} is listed '
                             f'twice (also as image {image_ids[rel_path]})')
        image_ids[rel_path] = image_id
    return image_ids


def read_part_locs(path: str) -> Dict[int, Dict[int, Tuple[float, float, bool]]]:
    """Part keypoints of each image, from CUB's ``parts/part_locs.txt``.

    Args:
        path (str): the ``part_locs.txt`` file.

    Returns:
        dict: image id -> {part id -> (x, y, visible)}, x and y in original
        image pixels.
    """
    locs: Dict[int, Dict[int, Tuple[float, float, bool]]] = {}
    layout = '<image_id> <part_id> <x> <y> <visible>'
    for line_no, fields in _rows(path, 5, layout):
        image_id = _number(path, line_no, fields[0], int, 'image_id')
        part_id = _number(path, line_no, fields[1], int, 'part_id')
        x = _number(path, line_no, fields[2], float, 'x')
        y = _number(path, line_no, fields[3], float, 'y')
        visible = _number(path, line_no, fields[4], int, 'visible')
        if visible not in (0, 1):
            raise ValueError(f'PartHitRate: {path}:{line_no}: visible must be 0 or 1, '
                             f'got {fields[4]!r}')
        locs.setdefault(image_id, {})[part_id] = (x, y, bool(visible))
    return locs


def read_part_regions(path: str) -> Dict[int, Dict[int, Tuple[float, ...]]]:
    """Part regions of each image, from mmdaf's ``parts/part_boxes.txt``.

    Args:
        path (str): the ``part_boxes.txt`` file (a synthetic-set extension).

    Returns:
        dict: image id -> {part id -> (x1, y1, x2, y2)} in original image pixels.
    """
    regions: Dict[int, Dict[int, Tuple[float, ...]]] = {}
    layout = '<image_id> <part_id> <x1> <y1> <x2> <y2>'
    for line_no, fields in _rows(path, 6, layout):
        image_id = _number(path, line_no, fields[0], int, 'image_id')
        part_id = _number(path, line_no, fields[1], int, 'part_id')
        box = tuple(_number(path, line_no, value, float, name)
                    for value, name in zip(fields[2:], ('x1', 'y1', 'x2', 'y2')))
        if box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f'PartHitRate: {path}:{line_no}: need x1 <= x2 and '
                             f'y1 <= y2, got {" ".join(fields[2:])!r}')
        regions.setdefault(image_id, {})[part_id] = box
    return regions


def visible_keypoints(locs: Dict[int, Tuple[float, float, bool]]) -> np.ndarray:
    """(P, 2) xy of the visible keypoints of one image (P may be 0)."""
    points = [(x, y) for x, y, visible in locs.values() if visible]
    return np.array(points, dtype=np.float64).reshape(-1, 2)


def visible_regions(regions: Dict[int, Tuple[float, ...]],
                    locs: Dict[int, Tuple[float, float, bool]]) -> np.ndarray:
    """(R, 4) xyxy regions of one image whose keypoint is marked visible.

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
# Geometry
# ----------------------------------------------------------------------------
def _as_array(values) -> np.ndarray:
    """A tensor (any device) or array-like as a float64 array."""
    if hasattr(values, 'detach'):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _pair(value, name: str) -> Tuple[float, float]:
    """A scalar or a 2-sequence as two floats (``scale_factor`` is (w, h))."""
    values = np.asarray(value, dtype=np.float64).reshape(-1)
    if values.size == 1:
        return float(values[0]), float(values[0])
    if values.size != 2:
        raise ValueError(f'PartHitRate: {name} must be a number or (w, h), got {value!r}')
    return float(values[0]), float(values[1])


def original_to_input(ori_shape: Sequence[int], img_shape: Sequence[int],
                      scale_factor=None, crop: str = 'center'
                      ) -> Tuple[np.ndarray, np.ndarray]:
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
    scale_w, scale_h = _pair(scale_factor, 'scale_factor')
    resized_h, resized_w = int(round(ori_h * scale_h)), int(round(ori_w * scale_w))
    scale = np.array([scale_w, scale_h])
    if (height, width) == (resized_h, resized_w):
        return scale, np.zeros(2)
    shapes = (f'ori_shape {(ori_h, ori_w)} x scale_factor {(scale_w, scale_h)} = '
              f'{(resized_h, resized_w)}, img_shape {(height, width)}')
    if height > resized_h or width > resized_w:
        raise ValueError(f'PartHitRate: the input is larger than the resized image '
                         f'({shapes}); padding in the pipeline is not supported')
    if crop != 'center':
        raise ValueError(f'PartHitRate: the pipeline crops after resizing ({shapes}); '
                         "pass crop='center' if the crop is a CenterCrop")
    # mmcv's CenterCrop: offset = round((resized - crop) / 2) with Python's round.
    offset = np.array([int(round((resized_w - width) / 2.0)),
                       int(round((resized_h - height) / 2.0))], dtype=np.float64)
    return scale, offset


def flip_points(points_xy: np.ndarray, img_shape: Sequence[int],
                direction: str) -> np.ndarray:
    """Points mirrored as mmcv's ``RandomFlip`` mirrors an image.

    Args:
        points_xy (np.ndarray): (P, 2) points in the network input.
        img_shape (Sequence[int]): (H, W) of the network input.
        direction (str): ``'horizontal'``, ``'vertical'`` or ``'diagonal'``.

    Returns:
        np.ndarray: (P, 2) mirrored points.
    """
    if direction not in FLIP_AXES:
        raise ValueError(f'PartHitRate: unknown flip_direction {direction!r}, '
                         f'expected one of {sorted(FLIP_AXES)}')
    flip_x, flip_y = FLIP_AXES[direction]
    height, width = img_shape[:2]
    flipped = points_xy.copy()
    if flip_x:
        flipped[:, 0] = width - flipped[:, 0]
    if flip_y:
        flipped[:, 1] = height - flipped[:, 1]
    return flipped


def _points_in_boxes(points_xy: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
    """Elementwise point-in-box test with broadcasting; edges count as inside."""
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
    return _points_in_boxes(points_xy, boxes_xyxy[..., None, :]).any(axis=-1)


def box_centres_in_regions(boxes_xyxy: np.ndarray, regions_xyxy: np.ndarray) -> np.ndarray:
    """Whether each box's centre lies in at least one region (edges inside).

    Args:
        boxes_xyxy (np.ndarray): (..., 4) boxes.
        regions_xyxy (np.ndarray): (R, 4) regions.

    Returns:
        np.ndarray: (...) bool; all False when R is 0.
    """
    centres = (boxes_xyxy[..., None, :2] + boxes_xyxy[..., None, 2:]) / 2
    return _points_in_boxes(centres, regions_xyxy).any(axis=-1)


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


# ----------------------------------------------------------------------------
# The metric
# ----------------------------------------------------------------------------
@METRICS.register_module()
class PartHitRate(BaseMetric):
    """Share of proposed part boxes that contain an annotated part, against
    random boxes of the same size.

    For every data sample with ``part_boxes`` ((N, 4) xyxy in network-input
    pixels, as ``DAFClassifier.predict`` sets them) the metric looks up the
    image in ``<data_root>/images.txt`` by the tail of the sample's
    ``img_path``, maps its visible keypoints from ``parts/part_locs.txt`` into
    the network input, and counts the boxes that contain at least one. Each box
    is then redrawn ``random_draws`` times at a uniformly random position
    inside the input (same width and height), seeded by ``seed`` and the image
    id, so the chance level does not depend on batch order or world size.

    Results, under the prefix ``part_hit_rate`` by default:

    - ``proposals``: percent of proposed boxes that hit.
    - ``random``: percent of random boxes that hit.
    - ``ratio``: ``proposals / random`` (inf if only random is 0, nan if both).
    - ``num_boxes``, ``num_samples``: proposed boxes and samples scored.
    - ``num_skipped``: samples without ``part_boxes`` (e.g. a baseline
      classifier), which are skipped; if all are, only the counts are reported.

    Supported pipelines: the network input must come from the original image
    by at most one resize that records ``scale_factor`` (mmcv ``Resize``,
    mmpretrain ``ResizeEdge``), then optionally a ``CenterCrop`` and a
    ``RandomFlip`` (recorded by ``flip``/``flip_direction``). Identity and
    resize-only pipelines are exact; ``crop='center'`` reconstructs mmcv's
    centre crop from the shapes, and ``crop='none'`` makes any crop an error.
    Padding is an error. Not supported, because the metainfo cannot tell them
    apart from the supported cases: a random crop (scored as a centre crop),
    several resizes, and a crop with no ``scale_factor`` before it (without
    ``scale_factor`` the whole original image is taken to be resized to
    ``img_shape``). Keypoints cut off by the crop do not count.

    Args:
        data_root (str): the data set root holding ``images.txt`` and
            ``parts/part_locs.txt`` (and ``parts/part_boxes.txt`` for
            ``mode='regions'``).
        mode (str): ``'keypoints'`` (default; CUB's annotation): a box hits
            when it contains a visible keypoint. ``'regions'`` (synthetic sets
            written by ``make_synthetic_fgvc``): a box hits when its centre lies
            in the region of a visible part from ``parts/part_boxes.txt``.
        random_draws (int): random boxes per proposed box. Defaults to 20.
        seed (int): seed of the random boxes. Defaults to 0.
        crop (str): ``'center'`` or ``'none'``, see above.
        collect_device (str): ``'cpu'`` or ``'gpu'``, see ``BaseMetric``.
        prefix (str, optional): key prefix; defaults to ``part_hit_rate``.
    """
    default_prefix: Optional[str] = 'part_hit_rate'

    def __init__(self,
                 data_root: str,
                 mode: str = 'keypoints',
                 random_draws: int = 20,
                 seed: int = 0,
                 crop: str = 'center',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if mode not in MODES:
            raise ValueError(f'PartHitRate: mode must be one of {MODES}, got {mode!r}')
        if crop not in CROPS:
            raise ValueError(f'PartHitRate: crop must be one of {CROPS}, got {crop!r}')
        if not isinstance(random_draws, int) or random_draws < 1:
            raise ValueError(f'PartHitRate: random_draws must be a positive int, '
                             f'got {random_draws!r}')
        self.data_root = data_root
        self.mode = mode
        self.random_draws = random_draws
        self.seed = seed
        self.crop = crop
        # Read at build time so that a wrong data_root fails before training.
        self.images_path = osp.join(data_root, IMAGES_FILE)
        self.part_locs_path = osp.join(data_root, PART_LOCS_FILE)
        self.image_ids = read_image_paths(self.images_path)
        self.part_locs = read_part_locs(self.part_locs_path)
        self.part_regions = (read_part_regions(osp.join(data_root, PART_BOXES_FILE))
                             if mode == 'regions' else None)

    def annotations(self, image_id: int, img_path: str) -> np.ndarray:
        """(P, 2) visible keypoints or (R, 4) visible regions, original pixels."""
        if image_id not in self.part_locs:
            raise ValueError(f'PartHitRate: {self.part_locs_path} has no rows for '
                             f'image {image_id} ({img_path})')
        if self.mode == 'keypoints':
            return visible_keypoints(self.part_locs[image_id])
        if image_id not in self.part_regions:
            raise ValueError(f'PartHitRate: {osp.join(self.data_root, PART_BOXES_FILE)} '
                             f'has no rows for image {image_id} ({img_path})')
        return visible_regions(self.part_regions[image_id], self.part_locs[image_id])

    def to_input_frame(self, annotations: np.ndarray, sample) -> np.ndarray:
        """Annotations of one sample mapped into its network input and cut to it.

        Args:
            annotations (np.ndarray): (P, 2) points or (R, 4) boxes, original
                image pixels.
            sample (dict): the data sample with its metainfo.

        Returns:
            np.ndarray: (P', 2) or (R', 4) in network-input pixels.
        """
        img_shape = sample['img_shape']
        scale, offset = original_to_input(sample['ori_shape'], img_shape,
                                          sample.get('scale_factor'), self.crop)
        points = annotations.reshape(-1, 2) * scale - offset
        if sample.get('flip', False):
            points = flip_points(points, img_shape, sample.get('flip_direction')
                                 or 'horizontal')
        if self.mode == 'keypoints':
            return points_inside(points, img_shape)
        corners = points.reshape(-1, 2, 2)
        # A flip swaps x1 and x2 (or y1 and y2): take the min and max again.
        regions = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
        return regions_inside(regions, img_shape)

    def hits(self, boxes_xyxy: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(...) bool hits of (..., 4) boxes on the mode's targets."""
        if self.mode == 'keypoints':
            return boxes_containing_points(boxes_xyxy, targets)
        return box_centres_in_regions(boxes_xyxy, targets)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Count the hits of each sample's proposed and random boxes."""
        for sample in data_samples:
            if 'part_boxes' not in sample:
                self.results.append(dict(skipped=True))
                continue
            self.results.append(self.score_sample(sample))

    def score_sample(self, sample) -> dict:
        """``num_boxes``, ``hits`` and ``random_hits`` of one data sample."""
        for key in ('img_path', 'ori_shape', 'img_shape'):
            if key not in sample:
                raise KeyError(f'PartHitRate: a data sample with part_boxes has no '
                               f'{key!r} in its metainfo')
        img_path = sample['img_path']
        image_id = lookup_image_id(img_path, self.image_ids)
        if image_id is None:
            raise ValueError(f'PartHitRate: {img_path} is not listed in '
                             f'{self.images_path}; is data_root {self.data_root!r} '
                             'the data set being evaluated?')
        boxes = _as_array(sample['part_boxes'])
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f'PartHitRate: part_boxes of {img_path} must be (N, 4), '
                             f'got shape {tuple(boxes.shape)}')
        targets = self.to_input_frame(self.annotations(image_id, img_path), sample)
        rng = np.random.default_rng([self.seed, image_id])
        random_boxes = random_boxes_like(boxes, sample['img_shape'], self.random_draws, rng)
        return dict(skipped=False, num_boxes=len(boxes),
                    hits=int(self.hits(boxes, targets).sum()),
                    random_hits=int(self.hits(random_boxes, targets).sum()))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Hit rates in percent, their ratio and the counts."""
        scored = [result for result in results if not result['skipped']]
        metrics = dict(num_samples=len(scored), num_skipped=len(results) - len(scored))
        if not scored:
            MMLogger.get_current_instance().warning(
                'PartHitRate: no data sample carries part_boxes; is the model a '
                'DAFClassifier with an SPPN head?')
            return metrics
        num_boxes = sum(result['num_boxes'] for result in scored)
        if num_boxes == 0:
            raise ValueError('PartHitRate: every part_boxes is empty (0 boxes)')
        proposals = 100.0 * sum(result['hits'] for result in scored) / num_boxes
        random = (100.0 * sum(result['random_hits'] for result in scored)
                  / (num_boxes * self.random_draws))
        metrics.update(proposals=proposals, random=random,
                       ratio=hit_ratio(proposals, random), num_boxes=num_boxes)
        return metrics


def hit_ratio(proposals: float, random: float) -> float:
    """``proposals / random``; inf when only ``random`` is 0, nan when both are."""
    if random > 0:
        return proposals / random
    return float('inf') if proposals > 0 else float('nan')
