"""Batched greedy NMS that seeks only the first N survivors of each image.

SPPNHead's proposals (paper Sec. 3.3): N part boxes per image out of a top-k
candidate list, NMS survivors first. Every overlap is decided as
torchvision's CPU ``nms`` decides it, so the kept boxes are the same.
"""
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def iou_above(boxes_a: Tensor, areas_a: Tensor, boxes_b: Tensor, areas_b: Tensor,
              iou_thr: float) -> Tensor:
    """Whether IoU(a, b) > ``iou_thr``, decided as torchvision's CPU ``nms``.

    The same float32 operations in the same order (intersection from the
    clamped corner differences, union ``area_a + area_b - inter``) and the
    comparison with the threshold in float64, so that every decision matches
    its bit for bit. A zero-area box has a NaN IoU: never above.

    Args:
        boxes_a (Tensor): (4, ...) float32 x1, y1, x2, y2 of boxes,
            coordinates first.
        areas_a (Tensor): (...) their areas.
        boxes_b (Tensor): (4, ...) float32 boxes, broadcastable with a.
        areas_b (Tensor): (...) their areas.
        iou_thr (float): the NMS threshold.

    Returns:
        Tensor: bool, the broadcast shape of the areas.
    """
    size = (torch.minimum(boxes_a[2:], boxes_b[2:])
            - torch.maximum(boxes_a[:2], boxes_b[:2])).clamp(min=0)  # (2, ...)
    inter = size[0] * size[1]
    return (inter / (areas_a + areas_b - inter)).double() > iou_thr


def first_nms_survivors(boxes: Tensor, valid: Tensor, num_keep: int, iou_thr: float,
                        pairwise: bool) -> Tensor:
    """(B, k) bool: the first ``num_keep`` valid candidates greedy NMS keeps.

    The top-k list is already in NMS order (score descending, ties in top-k
    order, as torchvision's stable sort leaves them), and greedy NMS decides
    each box from the kept boxes before it only. So the first N survivors
    come from N rounds over the whole batch at once: keep each image's first
    live candidate, then drop the candidates it overlaps (itself included);
    later survivors, which :func:`pick_first_n` never reaches, are not
    sought. An image with fewer than N survivors gets all of them, as a full
    NMS would. Overlaps are decided as torchvision's CPU ``nms`` decides them
    (:func:`iou_above`), so the kept boxes are the same.

    Args:
        boxes (Tensor): (B, k, 4) xyxy candidate boxes, in top-k order;
            detached here.
        valid (Tensor): (B, k) bool, which entries are candidates.
        num_keep (int): N, the survivors sought per image.
        iou_thr (float): the NMS IoU threshold.
        pairwise (bool): True computes all (B, k + 1, k + 1) pairwise
            overlaps at once, which leaves three small ops per round (for a
            short list); False computes the kept box's overlaps round by
            round (for a long one). Both give the same survivors.

    Returns:
        Tensor: (B, k) bool.
    """
    num_topk = valid.shape[1]
    # Coordinates first, (4, B, k + 1), so that the overlaps below run
    # over contiguous rows. A zero box at the end overlaps nothing: the
    # greedy rounds use position k as "no live candidate left".
    coords = F.pad(boxes.detach().float().permute(2, 0, 1), (0, 1))
    areas = (coords[2] - coords[0]) * (coords[3] - coords[1])  # (B, k + 1)
    if pairwise:
        suppresses = iou_above(coords[..., None], areas[..., None],
                               coords[:, :, None], areas[:, None],
                               iou_thr)  # (B, k + 1, k + 1)
        # Keeping a candidate removes it; the zero box stays live.
        suppresses.diagonal(dim1=1, dim2=2)[:, :num_topk] = True

        def suppressed_by(first: Tensor) -> Tensor:
            return suppresses.gather(
                1, first[..., None].expand(-1, -1, num_topk + 1)).squeeze(1)
    else:
        positions = torch.arange(num_topk + 1, device=coords.device)

        def suppressed_by(first: Tensor) -> Tensor:
            kept = coords.gather(2, first.expand(4, -1, -1))  # (4, B, 1)
            above = iou_above(kept, areas.gather(1, first), coords, areas,
                              iou_thr)  # (B, k + 1)
            return above | ((positions == first) & (first < num_topk))

    return greedy_survivors(valid, suppressed_by, num_keep)


def greedy_survivors(valid: Tensor, suppressed_by: Callable[[Tensor], Tensor],
                     num_keep: int) -> Tensor:
    """``num_keep`` greedy NMS rounds over (B, k) candidates.

    Args:
        valid (Tensor): (B, k) bool, the candidates, in NMS order.
        suppressed_by (Callable): (B, 1) positions in [0, k] -> (B, k + 1)
            bool, what keeping them removes; position k is a placeholder
            that removes nothing.
        num_keep (int): the number of rounds.

    Returns:
        Tensor: (B, k) bool, the kept positions.
    """
    num_imgs, num_topk = valid.shape
    # uint8 for argmax, which returns the first maximum: the best live
    # candidate, or the always live placeholder k once none is left.
    alive = F.pad(valid.to(torch.uint8), (0, 1), value=1)
    kept = []
    for _ in range(num_keep):
        first = alive.argmax(dim=1, keepdim=True)  # (B, 1)
        kept.append(first)
        alive = alive.masked_fill(suppressed_by(first), 0)
    survived = valid.new_zeros((num_imgs, num_topk + 1))
    survived.scatter_(1, torch.cat(kept, dim=1), True)
    return survived[:, :num_topk]


def pick_first_n(survived: Tensor, valid: Tensor, scores: Tensor,
                 num_keep: int) -> Tensor:
    """(B, N) positions into the top-k list: NMS survivors first.

    The top-k list is sorted by score, so a stable sort on the tier
    (0 survivor, 1 suppressed candidate, 2 not a candidate) keeps score order
    within tiers. Positions past the candidate count wrap around (repeat).
    The N picks are finally re-sorted by score (stable).

    Args:
        survived (Tensor): (B, k) bool, the NMS survivors
            (:func:`first_nms_survivors`).
        valid (Tensor): (B, k) bool, the candidates.
        scores (Tensor): (B, k) their scores, in top-k order; detached here.
        num_keep (int): N, the positions returned per image.

    Returns:
        Tensor: (B, N) long positions in [0, k), by score descending.
    """
    tier = torch.full_like(survived, 2, dtype=torch.long)
    tier = tier.masked_fill(valid, 1).masked_fill(survived, 0)
    by_tier = torch.sort(tier, dim=1, stable=True).indices
    num_valid = valid.sum(dim=1, keepdim=True).clamp(min=1)
    slots = torch.arange(num_keep, device=valid.device)[None] % num_valid
    picked = by_tier.gather(1, slots)
    order = torch.sort(scores.detach().gather(1, picked), dim=1,
                       descending=True, stable=True).indices
    return picked.gather(1, order)
