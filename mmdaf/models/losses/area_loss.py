"""R_area: pulls each part box's area toward S / N (paper Sec. 3.7.2)."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor

from .overlap_loss import box_areas


@MODELS.register_module()
class PartAreaLoss(nn.Module):
    """Scale-free penalty of each box area relative to the object area / N.

    With S the object area from the location heatmap and N parts:

    .. math::

        L = \\frac{1}{BN} \\sum_{b, i}
            \\mathrm{smoothL1}_\\beta\\left(\\log \\frac{\\max(|B_i|, 1)}
            {\\max(S_b / N, 1)}\\right)

    where ``smoothL1_beta(x) = 0.5 x^2 / beta`` for ``|x| < beta`` else
    ``|x| - 0.5 beta``. Zero at ``|B_i| = S/N``, growing both ways and
    symmetric in the ratio (twice too big costs as much as twice too small).
    Areas are clamped to >= 1 px^2 so that the log stays finite for zero-width
    boxes. The paper's formula was lost in the OCR; this form is our choice
    (DESIGN.md). ``object_area`` is detached: it is a target.

    Args:
        beta (float): smooth-L1 transition point on the log ratio. Defaults to
            1.0.
        num_parts (int, optional): N in S / N. Defaults to None: the number of
            boxes given to ``forward``.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, beta: float = 1.0, num_parts: Optional[int] = None,
                 loss_weight: float = 1.0):
        super().__init__()
        if beta <= 0:
            raise ValueError(f'beta must be > 0, got {beta}')
        if num_parts is not None and num_parts < 1:
            raise ValueError(f'num_parts must be >= 1 or None, got {num_parts}')
        self.beta = beta
        self.num_parts = num_parts
        self.loss_weight = loss_weight

    def forward(self, boxes: Tensor, object_area: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            boxes (Tensor): (B, N, 4) xyxy part boxes in input pixels.
            object_area (Tensor): (B,) object area S in input pixels.

        Returns:
            Tensor: scalar loss.
        """
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise ValueError(
                f'boxes must be (B, N, 4) xyxy, got {tuple(boxes.shape)}')
        if object_area.shape != boxes.shape[:1]:
            raise ValueError(
                f'object_area must be (B,) = ({boxes.shape[0]},), got '
                f'{tuple(object_area.shape)}')
        num_parts = self.num_parts or boxes.shape[1]
        target_area = (object_area.detach().to(boxes.dtype) / num_parts).clamp(min=1)
        log_ratio = torch.log(box_areas(boxes).clamp(min=1) / target_area[:, None])
        loss = F.smooth_l1_loss(log_ratio, torch.zeros_like(log_ratio),
                                beta=self.beta)
        return self.loss_weight * loss
