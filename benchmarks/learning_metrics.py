"""The metrics of ``benchmarks/learning.py``: accuracies and part hit rates.

The geometry is the ``PartHitRate`` metric's
(``mmdaf/evaluation/part_hit_rate.py``); these wrappers take any array-like
and keep the benchmark's names. A box *hits* when its centre lies inside a
ground-truth part region (boundaries count as inside); it *contains a part*
when the centre of a part region lies inside it. Random boxes keep each
proposal's width and height at a uniformly random position in the image.
"""
from typing import Dict, Sequence

import numpy as np


def box_centre_hits(boxes_xyxy: np.ndarray, regions_xyxy: np.ndarray) -> np.ndarray:
    """(N,) bool: whether each of the (N, 4) boxes has its centre inside at
    least one of the (P, 4) regions; boundaries count as inside."""
    from mmdaf.evaluation.part_hit_rate import box_centres_in_regions
    return box_centres_in_regions(_as_boxes(boxes_xyxy), _as_boxes(regions_xyxy))


def boxes_containing_a_part(boxes_xyxy: np.ndarray,
                            regions_xyxy: np.ndarray) -> np.ndarray:
    """(N,) bool: whether each box contains the centre of at least one region.

    The complement of :func:`box_centre_hits` for boxes much larger than the
    parts, whose centres can miss every part while the box covers one.
    """
    from mmdaf.evaluation.part_hit_rate import boxes_containing_points
    regions = _as_boxes(regions_xyxy)
    return boxes_containing_points(_as_boxes(boxes_xyxy),
                                   (regions[:, :2] + regions[:, 2:]) / 2)


def random_boxes_like(boxes_xyxy: np.ndarray, img_shape: Sequence[int], draws: int,
                      rng: np.random.Generator) -> np.ndarray:
    """(draws, N, 4) boxes of the same widths and heights at uniformly random
    positions inside the (H, W) image."""
    from mmdaf.evaluation.part_hit_rate import random_boxes_like as random_like
    return random_like(_as_boxes(boxes_xyxy), img_shape, draws, rng)


def _as_boxes(boxes) -> np.ndarray:
    """(N, 4) float64 boxes from any array-like."""
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def hit_rates(boxes_per_image: Dict[int, np.ndarray],
              regions_per_image: Dict[int, np.ndarray],
              img_shapes: Dict[int, Sequence[int]], draws: int = 20,
              seed: int = 0) -> Dict[str, float]:
    """Part hit rate and part-in-box rate of the proposals and of same-size
    random boxes.

    Args:
        boxes_per_image (dict): image id -> (N, 4) proposed boxes.
        regions_per_image (dict): image id -> (P, 4) ground-truth part regions.
        img_shapes (dict): image id -> (H, W).
        draws (int): random boxes per proposed box.
        seed (int): seed of the random boxes.

    Returns:
        dict: ``hit_rate``, ``random_hit_rate``, ``part_in_box_rate`` and
        ``random_part_in_box_rate`` (fractions of boxes), ``num_boxes``.
    """
    if not boxes_per_image:
        raise ValueError('boxes_per_image is empty: no proposals to score')
    rng = np.random.default_rng(seed)
    hits = random_hits = contains = random_contains = num_boxes = 0
    for image_id in sorted(boxes_per_image):
        boxes = np.asarray(boxes_per_image[image_id], dtype=np.float64).reshape(-1, 4)
        regions = regions_per_image[image_id]
        random_boxes = random_boxes_like(boxes, img_shapes[image_id], draws,
                                         rng).reshape(-1, 4)
        hits += int(box_centre_hits(boxes, regions).sum())
        random_hits += int(box_centre_hits(random_boxes, regions).sum())
        contains += int(boxes_containing_a_part(boxes, regions).sum())
        random_contains += int(boxes_containing_a_part(random_boxes, regions).sum())
        num_boxes += len(boxes)
    return dict(hit_rate=hits / num_boxes,
                random_hit_rate=random_hits / (num_boxes * draws),
                part_in_box_rate=contains / num_boxes,
                random_part_in_box_rate=random_contains / (num_boxes * draws),
                num_boxes=num_boxes)


def touches_border(boxes_xyxy: np.ndarray, img_shape: Sequence[int],
                   tolerance: float = 0.5) -> np.ndarray:
    """Whether each box has an edge within ``tolerance`` px of the image border.

    Args:
        boxes_xyxy (np.ndarray): (N, 4) boxes.
        img_shape (Sequence[int]): (H, W).
        tolerance (float): distance in pixels that counts as touching.

    Returns:
        np.ndarray: (N,) bool.
    """
    height, width = img_shape
    boxes_xyxy = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return ((boxes_xyxy[:, 0] <= tolerance) | (boxes_xyxy[:, 1] <= tolerance)
            | (boxes_xyxy[:, 2] >= width - tolerance)
            | (boxes_xyxy[:, 3] >= height - tolerance))


def accuracies(pred_labels: Sequence[int], gt_labels: Sequence[int],
               num_classes: int) -> Dict[str, float]:
    """Top-1 and mean per-class accuracy (classes absent from gt are skipped)."""
    pred_labels = np.asarray(pred_labels)
    gt_labels = np.asarray(gt_labels)
    if pred_labels.shape != gt_labels.shape or pred_labels.size == 0:
        raise ValueError(f'need equally long non-empty label lists, got '
                         f'{pred_labels.shape} and {gt_labels.shape}')
    correct = pred_labels == gt_labels
    per_class = [correct[gt_labels == k].mean() for k in range(num_classes)
                 if (gt_labels == k).any()]
    return dict(top1=float(correct.mean()), mean_class_acc=float(np.mean(per_class)))
