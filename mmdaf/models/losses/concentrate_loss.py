"""Concentrate loss on the averaged top-M part logits (paper Sec. 3.7.4)."""
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class ConcentrateLoss(nn.Module):
    """Cross entropy of the mean logits of the M best-scored part images.

    .. math::

        L = \\mathrm{CE}\\left(\\frac{1}{M} \\sum_{i=1}^{M} z_i, y\\right)

    Parts are expected sorted by SPPN score (as ``SPPNHead.propose`` returns
    them), so the first M are the best. When fewer than M parts are given, all
    of them are averaged.

    Args:
        top_m (int): M, the number of parts averaged. Defaults to 3 (DESIGN.md).
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, top_m: int = 3, loss_weight: float = 1.0):
        super().__init__()
        if top_m < 1:
            raise ValueError(f'top_m must be >= 1, got {top_m}')
        self.top_m = top_m
        self.loss_weight = loss_weight

    def forward(self, part_logits: Tensor, labels: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            part_logits (Tensor): (B, N, K) logits of the part images, parts
                sorted by score descending.
            labels (Tensor): (B,) class indices, or (B, K) class probabilities
                (e.g. from batch mixing).

        Returns:
            Tensor: scalar loss.
        """
        if part_logits.dim() != 3:
            raise ValueError(
                f'part_logits must be (B, N, K), got {tuple(part_logits.shape)}')
        if labels.shape[0] != part_logits.shape[0]:
            raise ValueError(
                f'labels has batch size {labels.shape[0]}, part_logits has '
                f'{part_logits.shape[0]}')
        fused_logits = part_logits[:, :self.top_m].mean(dim=1)
        return self.loss_weight * F.cross_entropy(fused_logits, labels)
