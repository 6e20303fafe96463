"""Distillation from the teacher into the student (paper Sec. 3.5)."""
from typing import Dict, Optional, Sequence

import torch.nn as nn
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from torch import Tensor

GATES = ('all', 'teacher_correct')


def make_hint_regressor(student_channels: int, teacher_channels: int) -> nn.Module:
    """1x1 conv + BN mapping the student's hint stage onto the teacher's."""
    return nn.Sequential(
        nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(teacher_channels))


def distill_gate(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                 mode: str) -> Tensor:
    """Per-sample weights of the distillation losses, from detached logits.

    Args:
        student_logits (Tensor): (B, K) z_s.
        teacher_logits (Tensor): (B, K) z_t.
        labels (Tensor): (B,) ground-truth classes.
        mode (str): ``'all'`` keeps every sample (the paper);
            ``'teacher_correct'`` keeps the samples whose teacher top-1 is the
            ground truth.

    Returns:
        Tensor: (B,) weights in {0, 1}, in ``student_logits``' dtype.
    """
    if mode == 'all':
        return student_logits.new_ones(student_logits.shape[0])
    if mode != 'teacher_correct':
        raise ValueError(f'distill gate must be one of {GATES}, got {mode!r}')
    keep = teacher_logits.detach().float().argmax(dim=1) == labels
    return keep.to(student_logits.dtype)


@MODELS.register_module()
class DAFDistiller(BaseModule):
    """Hint and soft-target distillation, gated per sample.

    ``loss_hint`` regresses the student's hint stage (through a 1x1 conv + BN,
    ``hint_regressor``) onto the teacher's; ``loss_soft`` is the KL of the
    temperature-softened logits. The teacher side is detached by the losses.
    The share of the batch kept by the gate is logged as ``distill_kept``.

    Args:
        student_channels (int): channels of the student's hint stage.
        teacher_channels (int): channels of the teacher's hint stage.
        student_index (int): the hint stage among the student's stages
            (C3, C4, C5). Defaults to 1 (C4).
        teacher_index (int): the hint stage among the teacher's outputs.
            Defaults to 0 (C4 with ``out_indices=(2, 3)``).
        loss_hint (dict): hint loss config. Defaults to ``HintLoss``.
        loss_soft (dict): soft-target loss config. Defaults to
            ``SoftTargetLoss`` at temperature 4.
        gate (str): the samples both losses act on (:func:`distill_gate`):
            ``'all'`` (the paper) or ``'teacher_correct'``. Defaults to ``'all'``.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self, student_channels: int, teacher_channels: int,
                 student_index: int = 1, teacher_index: int = 0,
                 loss_hint: Optional[dict] = None, loss_soft: Optional[dict] = None,
                 gate: str = 'all', init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if gate not in GATES:
            raise ValueError(f'DAFDistiller: gate must be one of {GATES}, got {gate!r}')
        self.hint_regressor = make_hint_regressor(student_channels, teacher_channels)
        self.loss_hint = MODELS.build(loss_hint or dict(type='HintLoss'))
        self.loss_soft = MODELS.build(
            loss_soft or dict(type='SoftTargetLoss', temperature=4.0))
        self.student_index = student_index
        self.teacher_index = teacher_index
        self.gate = gate

    def loss(self, student_feats: Sequence[Tensor], student_logits: Tensor,
             teacher_feats: Sequence[Tensor], teacher_logits: Tensor,
             labels: Tensor) -> Dict[str, Tensor]:
        """The distillation losses, unweighted.

        Args:
            student_feats (Sequence[Tensor]): the student's stages.
            student_logits (Tensor): (B, K) z_s.
            teacher_feats (Sequence[Tensor]): the teacher backbone's outputs.
            teacher_logits (Tensor): (B, K) z_t.
            labels (Tensor): (B, ) ground-truth classes.

        Returns:
            dict: ``loss_hint``, ``loss_soft`` and ``distill_kept`` (the share
            of the batch the gate kept).
        """
        gate = distill_gate(student_logits, teacher_logits, labels, self.gate)
        weight = None if self.gate == 'all' else gate
        hint_pred = self.hint_regressor(student_feats[self.student_index])
        hint = teacher_feats[self.teacher_index]
        return dict(
            loss_hint=self.loss_hint(hint_pred, hint, weight=weight),
            loss_soft=self.loss_soft(student_logits, teacher_logits, weight=weight),
            distill_kept=gate.mean())


def rename_legacy_distill_keys(state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints saved before the distiller was a module kept its regressor
    at ``hint_regressor.*`` of the classifier: move those keys (in place)
    under ``distill.hint_regressor.*``. A load-state-dict pre-hook of the
    classifier (the hook's other arguments are ignored)."""
    old = prefix + 'hint_regressor.'
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + 'distill.' + key[len(prefix):]] = state_dict.pop(key)

