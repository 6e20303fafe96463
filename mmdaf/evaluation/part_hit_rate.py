"""Part hit rate: how often DAF-net's proposed boxes land on annotated parts.

CUB-200-2011 annotates 15 part keypoints per image in ``parts/part_locs.txt``
(``<image_id> <part_id> <x> <y> <visible>``, original image pixels) and names the
images in ``images.txt`` (``<image_id> <relative path>``). A proposed box *hits*
when it contains at least one visible keypoint. The same share for boxes of the
same widths and heights placed uniformly at random in the image is the chance
level; a part proposal network that finds parts beats it.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from mmpretrain.registry import METRICS

from .part_annotations import (
    IMAGES_FILE,
    PART_BOXES_FILE,
    PART_LOCS_FILE,
    box_centres_in_regions,
    boxes_containing_points,
    check_metric_args,
    points_inside,
    points_to_input,
    random_boxes_like,
    read_image_paths,
    read_part_locs,
    read_part_regions,
    regions_inside,
    sample_image_id,
    sample_part_boxes,
    visible_keypoints,
    visible_regions,
)

# Re-exported: tests and older code import these two from here.
from .part_annotations import flip_points as flip_points
from .part_annotations import original_to_input as original_to_input

NAME = 'PartHitRate'


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
        check_metric_args(NAME, mode, crop, random_draws=random_draws)
        self.data_root = data_root
        self.mode = mode
        self.random_draws = random_draws
        self.seed = seed
        self.crop = crop
        # Read at build time so that a wrong data_root fails before training.
        self.images_path = osp.join(data_root, IMAGES_FILE)
        self.part_locs_path = osp.join(data_root, PART_LOCS_FILE)
        self.image_ids = read_image_paths(self.images_path, NAME)
        self.part_locs = read_part_locs(self.part_locs_path, NAME)
        self.part_regions = (read_part_regions(osp.join(data_root, PART_BOXES_FILE), NAME)
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
        points = points_to_input(annotations, sample, self.crop, NAME)
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
        image_id = sample_image_id(sample, self.image_ids, self.images_path,
                                   self.data_root, NAME)
        img_path = sample['img_path']
        boxes = sample_part_boxes(sample, NAME)
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
