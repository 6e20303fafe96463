"""DAFDistiller alone, built from a config dict: the hint regressor, the
per-sample gate and the two distillation losses on hand-made stages and
logits; the load-time renaming of the regressor's old checkpoint keys."""
import math

import pytest
import torch
import torch.nn as nn
from mmpretrain.registry import MODELS

import mmdaf  # noqa: F401  (registers DAFDistiller)
from mmdaf.models.heads.daf_distiller import (
    DAFDistiller,
    distill_gate,
    make_hint_regressor,
    rename_legacy_distill_keys,
)
from mmdaf.models.losses import HintLoss, SoftTargetLoss

# Sample 0 at T=1: KL((0.75, 0.25) || (0.5, 0.5)) = 0.75 ln 1.5 + 0.25 ln 0.5.
KL0 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
BN_SCALE = 1 / math.sqrt(1 + 1e-5)  # eval-mode BatchNorm with unit statistics


def build_distiller(**cfg) -> DAFDistiller:
    cfg = dict(dict(type='DAFDistiller', student_channels=2, teacher_channels=2,
                    loss_soft=dict(type='SoftTargetLoss', temperature=1.0)), **cfg)
    distiller = MODELS.build(cfg)
    with torch.no_grad():  # the regressor doubles each channel
        distiller.hint_regressor[0].weight.copy_(2 * torch.eye(2).view(2, 2, 1, 1))
    return distiller.eval()  # BatchNorm with its unit running statistics


def hand_stages(requires_grad: bool = False):
    """Student stages (C3, C4, C5) with the hint stage C4 all ones (other
    stages of other widths: reading them would fail), teacher stages with the
    hint at index 0 all zeros; student logits 0, teacher logits (ln 3, 0)."""
    student = (torch.randn(2, 5, 4, 4), torch.ones(2, 2, 3, 3, requires_grad=requires_grad),
               torch.randn(2, 7, 2, 2))
    teacher = (torch.zeros(2, 2, 3, 3, requires_grad=requires_grad), torch.randn(2, 9, 2, 2))
    student_logits = torch.zeros(2, 2, requires_grad=requires_grad)
    teacher_logits = torch.tensor([[math.log(3.0), 0.0]] * 2, requires_grad=requires_grad)
    return student, student_logits, teacher, teacher_logits


def test_builds_from_a_config_dict_with_the_documented_defaults():
    distiller = MODELS.build(dict(type='DAFDistiller', student_channels=16,
                                  teacher_channels=32))
    assert isinstance(distiller, DAFDistiller)
    assert (distiller.student_index, distiller.teacher_index, distiller.gate) == (1, 0, 'all')
    assert isinstance(distiller.loss_hint, HintLoss)
    assert isinstance(distiller.loss_soft, SoftTargetLoss)
    assert distiller.loss_soft.temperature == 4.0
    conv, norm = distiller.hint_regressor
    assert isinstance(conv, nn.Conv2d) and conv.weight.shape == (32, 16, 1, 1)
    assert conv.bias is None
    assert isinstance(norm, nn.BatchNorm2d) and norm.num_features == 32
    # The regressor is its only parameter set.
    assert [name for name, _ in distiller.named_parameters()] == [
        'hint_regressor.0.weight', 'hint_regressor.1.weight', 'hint_regressor.1.bias']


def test_hint_regressor_maps_student_channels_onto_the_teacher_s():
    regressor = make_hint_regressor(3, 5)
    assert regressor(torch.randn(2, 3, 4, 6)).shape == (2, 5, 4, 6)


def test_distill_gate_keeps_the_samples_the_teacher_gets_right():
    labels = torch.tensor([0, 1, 2])
    teacher = torch.tensor([[2.0, 0.0, 0.0],    # right
                            [2.0, 1.0, 0.0],    # wrong
                            [0.0, 0.0, 0.1]])   # right, barely
    student = torch.tensor([[0.0, 0.0, 5.0],
                            [0.0, 0.0, 0.0],
                            [0.0, 0.0, 3.0]])
    assert distill_gate(student, teacher, labels, 'all').tolist() == [1, 1, 1]
    assert distill_gate(student, teacher, labels, 'teacher_correct').tolist() == [1, 0, 1]
    # The weights take the student's dtype.
    half = distill_gate(student.half(), teacher, labels, 'teacher_correct')
    assert half.dtype == torch.float16 and half.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="distill gate must be one of"):
        distill_gate(student, teacher, labels, 'confident')


def test_ungated_losses_by_hand():
    distiller = build_distiller()
    student, student_logits, teacher, teacher_logits = hand_stages()
    losses = distiller.loss(student, student_logits, teacher, teacher_logits,
                            torch.tensor([0, 1]))
    assert set(losses) == {'loss_hint', 'loss_soft', 'distill_kept'}
    # Every hint cell is 2 / sqrt(1 + eps) against 0: per-sample MSE 4 / (1 + eps).
    assert losses['loss_hint'].item() == pytest.approx(4 * BN_SCALE**2, rel=1e-6)
    # Both samples have KL0 at T=1; the batch mean.
    assert losses['loss_soft'].item() == pytest.approx(KL0, abs=1e-6)
    assert losses['distill_kept'].item() == 1.0


@pytest.mark.parametrize('labels, kept', [
    ([0, 0], 1.0),  # the teacher's top-1 is class 0 on both
    ([0, 1], 0.5),  # right on sample 0 only
    ([1, 1], 0.0),  # wrong on both
])
def test_gated_losses_act_only_on_the_kept_samples(labels, kept):
    distiller = build_distiller(gate='teacher_correct')
    losses = distiller.loss(*hand_stages(), labels=torch.tensor(labels))
    assert losses['distill_kept'].item() == kept
    # Each kept sample adds its loss, divided by the whole batch.
    assert losses['loss_hint'].item() == pytest.approx(kept * 4 * BN_SCALE**2, rel=1e-6)
    assert losses['loss_soft'].item() == pytest.approx(kept * KL0, abs=1e-6)
    if kept == 0.0:
        assert losses['loss_soft'].item() == 0.0 and losses['loss_hint'].item() == 0.0


def test_stage_indices_pick_the_hint_stages():
    distiller = build_distiller(student_index=0, teacher_index=1)
    student, student_logits, teacher, teacher_logits = hand_stages()
    student = (torch.full((2, 2, 3, 3), 0.5), ) + student[1:]
    teacher = (teacher[0], torch.full((2, 2, 3, 3), 3.0))
    losses = distiller.loss(student, student_logits, teacher, teacher_logits,
                            torch.tensor([0, 1]))
    # 1 / sqrt(1 + eps) against 3 in every cell.
    assert losses['loss_hint'].item() == pytest.approx((3 - BN_SCALE)**2, rel=1e-6)


def test_gradients_stop_at_the_teacher():
    distiller = build_distiller().train()
    student, student_logits, teacher, teacher_logits = hand_stages(requires_grad=True)
    # A hint stage that varies: BatchNorm in training zeroes a constant one.
    student = (student[0], torch.randn(2, 2, 3, 3, requires_grad=True), student[2])
    student_logits = student_logits + torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    losses = distiller.loss(student, student_logits, teacher, teacher_logits,
                            torch.tensor([0, 1]))
    (losses['loss_hint'] + losses['loss_soft']).backward()
    assert teacher[0].grad is None and teacher_logits.grad is None
    assert student[1].grad.abs().sum() > 0
    assert distiller.hint_regressor[0].weight.grad.abs().sum() > 0


def test_unknown_gate_is_rejected():
    with pytest.raises(ValueError, match="DAFDistiller: gate must be one of .* got 'sometimes'"):
        build_distiller(gate='sometimes')


@pytest.mark.parametrize('prefix', ['', 'module.'])
def test_legacy_regressor_keys_move_under_distill(prefix):
    weight, running_var = torch.randn(3, 2, 1, 1), torch.rand(3)
    state_dict = {f'{prefix}backbone.conv1.weight': torch.zeros(1),
                  f'{prefix}hint_regressor.0.weight': weight,
                  f'{prefix}hint_regressor.1.running_var': running_var,
                  f'{prefix}teacher.head.fc.hint_regressor.weight': torch.ones(1)}
    rename_legacy_distill_keys(state_dict, prefix)
    assert sorted(state_dict) == sorted([
        f'{prefix}backbone.conv1.weight', f'{prefix}distill.hint_regressor.0.weight',
        f'{prefix}distill.hint_regressor.1.running_var',
        f'{prefix}teacher.head.fc.hint_regressor.weight'])
    assert state_dict[f'{prefix}distill.hint_regressor.0.weight'] is weight
    assert state_dict[f'{prefix}distill.hint_regressor.1.running_var'] is running_var
    # A second call (or a new checkpoint) changes nothing.
    again = dict(state_dict)
    rename_legacy_distill_keys(again, prefix)
    assert again == state_dict
