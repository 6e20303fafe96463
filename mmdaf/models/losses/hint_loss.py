"""Hint loss of DAF-net's distillation (paper sections 3.5 and 3.7.3)."""
from typing import Optional

import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from torch import Tensor

from .sample_weight import weighted_sample_mean


@MODELS.register_module()
class HintLoss(nn.Module):
    """MSE between the student's regressed feature and the teacher's hint.

    ``loss = loss_weight * mean((regressor_output - hint)**2)`` over all
    elements (FitNets' hint learning). With a per-sample ``weight`` (B,),
    each sample's mean squared error is multiplied by its weight and the
    result averaged over the B samples. The hint is detached here, so the
    gradient only reaches the student side.

    Args:
        loss_weight (float): Weight of the loss. Defaults to 1.0.
    """

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, regressor_output: Tensor, hint: Tensor,
                weight: Optional[Tensor] = None) -> Tensor:
        """Compute the hint loss.

        Args:
            regressor_output (Tensor): Student guided-layer feature after the
                regressor, shape (B, C, h, w).
            hint (Tensor): Teacher hint-layer feature, same shape.
            weight (Tensor, optional): (B,) per-sample weights; detached here.

        Returns:
            Tensor: Scalar loss.
        """
        if regressor_output.shape != hint.shape:
            raise ValueError(
                'regressor_output and hint must have the same shape, got '
                f'{tuple(regressor_output.shape)} and {tuple(hint.shape)}')
        if weight is None:
            return self.loss_weight * F.mse_loss(regressor_output, hint.detach())
        squared_error = (regressor_output - hint.detach())**2
        per_sample = squared_error.flatten(1).mean(dim=1)
        return self.loss_weight * weighted_sample_mean(per_sample, weight)
