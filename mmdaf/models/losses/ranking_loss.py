"""Pairwise ranking loss for part proposal scores (paper Sec. 3.7.5)."""
import torch
import torch.nn as nn
from mmdet.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class PartRankingLoss(nn.Module):
    """NTS-Net pairwise hinge: a more informative part must score higher.

    For image b and parts i, j with ``part_ce[b, i] < part_ce[b, j]`` (the part
    image of box i classifies the ground truth more confidently):

    .. math::

        L = \\frac{1}{B} \\sum_b \\sum_{(i, j): ce_i < ce_j}
            \\max(0, m - (s_i - s_j))

    Pairs with equal cross entropy add nothing. ``part_ce`` is detached here: it
    is a target and must not send gradient into the backbone.

    Args:
        margin (float): hinge margin m. Defaults to 1.0 (NTS-Net's value).
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, margin: float = 1.0, loss_weight: float = 1.0):
        super().__init__()
        self.margin = margin
        self.loss_weight = loss_weight

    def forward(self, scores: Tensor, part_ce: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            scores (Tensor): (B, N) part proposal scores.
            part_ce (Tensor): (B, N) ground-truth-class cross entropy of each
                part image.

        Returns:
            Tensor: scalar loss.
        """
        if scores.dim() != 2 or scores.shape != part_ce.shape:
            raise ValueError(
                f'scores and part_ce must both be (B, N), got '
                f'{tuple(scores.shape)} and {tuple(part_ce.shape)}')
        part_ce = part_ce.detach()
        # score_gap[b, i, j] = s_i - s_j; should_outrank[b, i, j]: i before j.
        score_gap = scores[:, :, None] - scores[:, None, :]
        should_outrank = part_ce[:, :, None] < part_ce[:, None, :]
        hinge = torch.relu(self.margin - score_gap) * should_outrank
        return self.loss_weight * hinge.sum(dim=(1, 2)).mean()
