"""Soft-target loss of DAF-net's distillation (paper sections 3.5, 3.7.3)."""
from typing import Optional

import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from torch import Tensor

from .sample_weight import weighted_sample_mean


@MODELS.register_module()
class SoftTargetLoss(nn.Module):
    """Knowledge-distillation soft-target loss (Hinton et al.).

    ``loss = loss_weight * T**2 * KL(softmax(z_t / T) || softmax(z_s / T))``
    summed over classes and averaged over the batch ("batchmean"; with a
    per-sample ``weight``, the weighted sum divided by B, so that a sample
    with weight 0 contributes nothing and the loss shrinks with the share of
    samples kept). The T**2
    factor keeps the gradient scale independent of T. The teacher logits are
    detached here, so the gradient only reaches the student.

    Args:
        temperature (float): Softening temperature T. Defaults to 4.0.
        loss_weight (float): Weight of the loss. Defaults to 1.0.
    """

    def __init__(self, temperature: float = 4.0, loss_weight: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        self.temperature = temperature
        self.loss_weight = loss_weight

    def forward(self, student_logits: Tensor, teacher_logits: Tensor,
                weight: Optional[Tensor] = None) -> Tensor:
        """Compute the soft-target loss.

        Args:
            student_logits (Tensor): z_s of shape (B, K).
            teacher_logits (Tensor): z_t of shape (B, K).
            weight (Tensor, optional): (B,) per-sample weights (e.g. the
                distillation gate of ``DAFClassifier``); detached here.

        Returns:
            Tensor: Scalar loss.
        """
        if student_logits.dim() != 2 or student_logits.shape != \
                teacher_logits.shape:
            raise ValueError(
                'student_logits and teacher_logits must both have shape '
                f'(B, K), got {tuple(student_logits.shape)} and '
                f'{tuple(teacher_logits.shape)}')
        student_log_probs = F.log_softmax(student_logits / self.temperature, dim=1)
        teacher_log_probs = F.log_softmax(
            teacher_logits.detach() / self.temperature, dim=1)
        kl_per_sample = F.kl_div(
            student_log_probs, teacher_log_probs, reduction='none',
            log_target=True).sum(dim=1)
        return self.loss_weight * self.temperature**2 * weighted_sample_mean(
            kl_per_sample, weight)

