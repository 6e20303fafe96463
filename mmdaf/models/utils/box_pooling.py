"""Average a feature map over boxes, weighting each cell by its overlap.

Used to score boxes from the clean pass's last stage (the student head on the
box-pooled features) instead of running one more backbone pass per box, and
to pool the last stage over the object mask of the location heatmap.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def cell_overlaps(lows: Tensor, highs: Tensor, num_cells: int, cell_size: float) -> Tensor:
    """Length of each interval's overlap with each cell of a 1-D grid.

    Args:
        lows (Tensor): (B, K) interval starts, input pixels.
        highs (Tensor): (B, K) interval ends.
        num_cells (int): cells along the axis.
        cell_size (float): cell length in input pixels.

    Returns:
        Tensor: (B, K, num_cells) overlaps in input pixels, >= 0.
    """
    edges = torch.arange(num_cells + 1, device=lows.device, dtype=lows.dtype) * cell_size
    starts = torch.maximum(lows[..., None], edges[:-1])
    ends = torch.minimum(highs[..., None], edges[1:])
    return (ends - starts).clamp(min=0)


def box_cell_weights(boxes: Tensor, feat_shape: Tuple[int, int],
                     img_shape: Tuple[int, int]) -> Tensor:
    """Each box's share of each feature cell, rows summing to 1.

    The map's (h, w) cells tile the (H, W) input. A cell's weight is its
    overlap area with the box over the box's area inside the input; a box with
    no area inside the input gets uniform weights (the global average).

    Args:
        boxes (Tensor): (B, K, 4) xyxy boxes, input pixels.
        feat_shape (tuple): (h, w) of the feature map.
        img_shape (tuple): (H, W) of the input.

    Returns:
        Tensor: (B, K, h * w) weights, row-major cells.
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f'boxes must be (B, K, 4), got {tuple(boxes.shape)}')
    (feat_h, feat_w), (img_h, img_w) = feat_shape, img_shape
    boxes = boxes.float()
    overlap_x = cell_overlaps(boxes[..., 0], boxes[..., 2], feat_w, img_w / feat_w)
    overlap_y = cell_overlaps(boxes[..., 1], boxes[..., 3], feat_h, img_h / feat_h)
    areas = (overlap_y[..., :, None] * overlap_x[..., None, :]).flatten(2)
    return normalised_cell_weights(areas)


def normalised_cell_weights(areas: Tensor) -> Tensor:
    """(..., h * w) cell areas -> weights summing to 1 over the cells; a row
    with no area gets uniform weights (the global average)."""
    totals = areas.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(areas, 1.0 / areas.shape[-1])
    return torch.where(totals > 0, areas / totals.clamp(min=1e-12), uniform)


def weighted_cell_average(feat: Tensor, weights: Tensor) -> Tensor:
    """(B, C, h, w) features and (B, K, h * w) cell weights -> (B, K, C)
    weighted averages, in ``feat``'s dtype."""
    cells = feat.flatten(2).transpose(1, 2)  # (B, h*w, C)
    return torch.bmm(weights.to(cells.dtype), cells)


def box_pooled_features(feat: Tensor, boxes: Tensor,
                        img_shape: Tuple[int, int]) -> Tensor:
    """Overlap-weighted average of a feature map inside each box.

    Args:
        feat (Tensor): (B, C, h, w) features covering the (H, W) input.
        boxes (Tensor): (B, K, 4) xyxy boxes, input pixels.
        img_shape (tuple): (H, W) of the input.

    Returns:
        Tensor: (B, K, C) pooled features, in ``feat``'s dtype.
    """
    if boxes.shape[0] != feat.shape[0]:
        raise ValueError(f'boxes have batch size {boxes.shape[0]}, the features '
                         f'{feat.shape[0]}')
    weights = box_cell_weights(boxes, tuple(feat.shape[-2:]), img_shape)
    return weighted_cell_average(feat, weights)


def mask_pooled_features(feat: Tensor, mask: Tensor) -> Tensor:
    """Average of a feature map over a mask, each cell weighted by the share of
    it the mask covers.

    Args:
        feat (Tensor): (B, C, h, w) features.
        mask (Tensor): (B, 1, h', w') bool or {0, 1} mask covering the same
            input as ``feat``; area-resampled to (h, w), so a cell half inside
            the mask counts half.

    Returns:
        Tensor: (B, C) pooled features, in ``feat``'s dtype; an image whose
        mask is empty gets the global average.
    """
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != feat.shape[0]:
        raise ValueError(f'mask must be (B, 1, h, w) with B = {feat.shape[0]}, '
                         f'got {tuple(mask.shape)}')
    coverage = F.adaptive_avg_pool2d(mask.float(), tuple(feat.shape[-2:])).flatten(1)
    return weighted_cell_average(feat, normalised_cell_weights(coverage)[:, None])[:, 0]
