"""R_IOU: overlap penalty between part boxes (paper Sec. 3.7.1)."""
import torch
import torch.nn as nn
from mmdet.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class PartOverlapLoss(nn.Module):
    """Dice-like overlap penalty over all pairs of an image's part boxes.

    .. math::

        L = \\frac{1}{B} \\sum_b \\frac{2}{N(N-1)} \\sum_{i<j}
            \\alpha \\frac{2 |B_i \\cap B_j|}{|B_i| + |B_j| + \\epsilon}

    Zero for disjoint boxes, ``alpha`` for identical boxes. ``eps`` keeps
    zero-area boxes finite (their term is 0). With N = 1 there are no pairs
    and the loss is 0.

    Args:
        alpha (float): penalty scale (the paper's hyper-parameter). Defaults to
            1.0.
        eps (float): added to the denominator, in pixels^2. Defaults to 1e-6.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, alpha: float = 1.0, eps: float = 1e-6,
                 loss_weight: float = 1.0):
        super().__init__()
        self.alpha = alpha
        self.eps = eps
        self.loss_weight = loss_weight

    def forward(self, boxes: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            boxes (Tensor): (B, N, 4) xyxy part boxes.

        Returns:
            Tensor: scalar loss.
        """
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise ValueError(
                f'boxes must be (B, N, 4) xyxy, got {tuple(boxes.shape)}')
        num_parts = boxes.shape[1]
        if num_parts < 2:
            return boxes.sum() * 0.0
        areas = box_areas(boxes)  # (B, N)
        top_left = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
        bottom_right = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
        overlap_wh = (bottom_right - top_left).clamp(min=0)
        intersections = overlap_wh[..., 0] * overlap_wh[..., 1]  # (B, N, N)
        area_sums = areas[:, :, None] + areas[:, None, :]
        dice = 2 * intersections / (area_sums + self.eps)
        i, j = torch.triu_indices(num_parts, num_parts, offset=1,
                                  device=boxes.device)
        pair_dice = dice[:, i, j]  # (B, N(N-1)/2)
        return self.loss_weight * self.alpha * pair_dice.mean()


def box_areas(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (...) areas; inverted boxes count as empty."""
    widths = (boxes[..., 2] - boxes[..., 0]).clamp(min=0)
    heights = (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    return widths * heights
