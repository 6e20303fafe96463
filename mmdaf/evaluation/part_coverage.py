"""Part coverage: how many different annotated parts DAF-net's top proposals find.

``PartHitRate`` asks whether each box lands on *some* part; four boxes on the
same head score 100 % there. Part coverage asks how many *different* parts the
top-N boxes of an image cover together: a visible part counts once when its
keypoint (CUB's ``parts/part_locs.txt``) or the centre of its region (the
synthetic sets' ``parts/part_boxes.txt``) lies inside at least one of the boxes.
The same count for boxes of the same widths and heights placed uniformly at
random in the image is the chance level.
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
    check_metric_args,
    points_in_boxes,
    points_inside,
    points_to_input,
    random_boxes_like,
    read_image_paths,
    read_part_locs,
    read_part_regions,
    sample_image_id,
    sample_part_boxes,
    visible_keypoints,
    visible_regions,
)

NAME = 'PartCoverage'


def parts_covered(boxes_xyxy: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    """How many of the points lie inside at least one box of the same set.

    Each point is one part, so a part inside two boxes counts once and a box
    holding two parts counts two. Edges count as inside.

    Args:
        boxes_xyxy (np.ndarray): (..., N, 4) sets of N boxes.
        points_xy (np.ndarray): (P, 2) one point per part.

    Returns:
        np.ndarray: (...) int counts in [0, P]; 0 when N or P is 0.
    """
    inside = points_in_boxes(points_xy, boxes_xyxy[..., None, :])  # (..., N, P)
    return inside.any(axis=-2).sum(axis=-1)


@METRICS.register_module()
class PartCoverage(BaseMetric):
    """Different annotated parts covered by the top-N proposed boxes of an
    image, against random boxes of the same sizes.

    For every data sample with ``part_boxes`` ((N, 4) xyxy in network-input
    pixels, best first, as ``DAFClassifier.predict`` sets them) the metric
    keeps the first ``top_n`` boxes, looks the image up in
    ``<data_root>/images.txt`` by the tail of its ``img_path``, maps one point
    per visible part into the network input and counts the parts whose point
    lies inside at least one kept box. The kept boxes are then redrawn
    together ``random_draws`` times at uniformly random positions inside the
    input (same widths and heights), seeded by ``seed`` and the image id, so
    the chance level does not depend on batch order or world size.

    Results, under the prefix ``part_coverage`` by default:

    - ``parts_covered``: different parts covered, mean over images.
    - ``parts_covered_random``: the same for the random boxes, mean over
      images and draws.
    - ``num_parts``: visible parts inside the input, mean over images: the
      ceiling of both counts.
    - ``boxes_per_image``: boxes counted per image, ``top_n`` unless the model
      proposes fewer.
    - ``num_samples``, ``num_skipped``: samples scored and samples without
      ``part_boxes`` (e.g. a baseline classifier); if all are skipped, only
      these two are reported.

    The annotation files and the supported pipelines (resize with
    ``scale_factor``, optional ``CenterCrop``, ``RandomFlip``) are those of
    ``PartHitRate``; parts that the crop cuts off do not count.

    Args:
        data_root (str): the data set root holding ``images.txt`` and
            ``parts/part_locs.txt`` (and ``parts/part_boxes.txt`` for
            ``mode='regions'``).
        top_n (int): boxes counted per image, the first of ``part_boxes``.
            Defaults to 4.
        mode (str): the point of each part. ``'keypoints'`` (default; CUB's
            annotation): its visible keypoint. ``'regions'`` (synthetic sets
            written by ``make_synthetic_fgvc``): the centre of its region in
            ``parts/part_boxes.txt``, for the parts whose keypoint is visible.
            Unlike ``PartHitRate``'s ``'regions'`` mode (the *box's* centre in
            a region), the *part's* centre must lie in a box here.
        random_draws (int): random redraws of the boxes of an image.
            Defaults to 20.
        seed (int): seed of the random boxes. Defaults to 0.
        crop (str): ``'center'`` or ``'none'``, as in ``PartHitRate``.
        collect_device (str): ``'cpu'`` or ``'gpu'``, see ``BaseMetric``.
        prefix (str, optional): key prefix; defaults to ``part_coverage``.
    """
    default_prefix: Optional[str] = 'part_coverage'

    def __init__(self,
                 data_root: str,
                 top_n: int = 4,
                 mode: str = 'keypoints',
                 random_draws: int = 20,
                 seed: int = 0,
                 crop: str = 'center',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        check_metric_args(NAME, mode, crop, top_n=top_n, random_draws=random_draws)
        self.data_root = data_root
        self.top_n = top_n
        self.mode = mode
        self.random_draws = random_draws
        self.seed = seed
        self.crop = crop
        # Read at build time so that a wrong data_root fails before training.
        self.images_path = osp.join(data_root, IMAGES_FILE)
        self.part_locs_path = osp.join(data_root, PART_LOCS_FILE)
        self.part_boxes_path = osp.join(data_root, PART_BOXES_FILE)
        self.image_ids = read_image_paths(self.images_path, NAME)
        self.part_locs = read_part_locs(self.part_locs_path, NAME)
        self.part_regions = (read_part_regions(self.part_boxes_path, NAME)
                             if mode == 'regions' else None)

    def part_points(self, image_id: int, img_path: str) -> np.ndarray:
        """(P, 2) one point per visible part of an image, original pixels:
        the keypoints, or the centres of the regions."""
        if image_id not in self.part_locs:
            raise ValueError(f'{NAME}: {self.part_locs_path} has no rows for '
                             f'image {image_id} ({img_path})')
        if self.mode == 'keypoints':
            return visible_keypoints(self.part_locs[image_id])
        if image_id not in self.part_regions:
            raise ValueError(f'{NAME}: {self.part_boxes_path} has no rows for '
                             f'image {image_id} ({img_path})')
        regions = visible_regions(self.part_regions[image_id], self.part_locs[image_id])
        return (regions[:, :2] + regions[:, 2:]) / 2

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Count the parts covered by each sample's top boxes and random boxes."""
        for sample in data_samples:
            if 'part_boxes' not in sample:
                self.results.append(dict(skipped=True))
                continue
            self.results.append(self.score_sample(sample))

    def score_sample(self, sample) -> dict:
        """``num_boxes``, ``num_parts``, ``covered`` and ``random_covered`` (the
        sum over the draws) of one data sample."""
        image_id = sample_image_id(sample, self.image_ids, self.images_path,
                                   self.data_root, NAME)
        boxes = sample_part_boxes(sample, NAME)[:self.top_n]
        img_shape = sample['img_shape']
        points = points_to_input(self.part_points(image_id, sample['img_path']),
                                 sample, self.crop, NAME)
        points = points_inside(points, img_shape)
        rng = np.random.default_rng([self.seed, image_id])
        random_boxes = random_boxes_like(boxes, img_shape, self.random_draws, rng)
        return dict(skipped=False, num_boxes=len(boxes), num_parts=len(points),
                    covered=int(parts_covered(boxes, points)),
                    random_covered=int(parts_covered(random_boxes, points).sum()))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Mean parts covered by the proposals and by random boxes, the mean
        visible parts and the counts."""
        scored = [result for result in results if not result['skipped']]
        metrics = dict(num_samples=len(scored), num_skipped=len(results) - len(scored))
        if not scored:
            MMLogger.get_current_instance().warning(
                f'{NAME}: no data sample carries part_boxes; is the model a '
                'DAFClassifier with an SPPN head?')
            return metrics
        num_images = len(scored)
        metrics.update(
            parts_covered=sum(result['covered'] for result in scored) / num_images,
            parts_covered_random=(sum(result['random_covered'] for result in scored)
                                  / (num_images * self.random_draws)),
            num_parts=sum(result['num_parts'] for result in scored) / num_images,
            boxes_per_image=sum(result['num_boxes'] for result in scored) / num_images)
        return metrics
