import math

import pytest
import torch
from mmpretrain.registry import MODELS

from mmdaf.models.losses import HintLoss, SoftTargetLoss


def softmax2(a, b):
    """Two-class softmax by hand."""
    return math.exp(a) / (math.exp(a) + math.exp(b)), math.exp(b) / (
        math.exp(a) + math.exp(b))


def test_soft_target_loss_by_hand():
    temperature = 2.0
    student = torch.tensor([[1.0, 0.0], [0.3, -0.2]])
    teacher = torch.tensor([[0.0, 2.0], [0.3, -0.2]])
    # Row 1: p_t = softmax([0, 1]), p_s = softmax([0.5, 0]).
    pt = softmax2(0.0, 1.0)
    ps = softmax2(0.5, 0.0)
    kl_row1 = sum(t * (math.log(t) - math.log(s)) for t, s in zip(pt, ps))
    # Row 2 has equal logits: KL 0. batchmean divides the sum by B = 2.
    expected = 0.5 * temperature**2 * (kl_row1 + 0.0) / 2
    loss_module = MODELS.build(
        dict(type='SoftTargetLoss', temperature=temperature, loss_weight=0.5))
    loss = loss_module(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.25740, abs=1e-5)


def test_soft_target_loss_zero_for_equal_logits_and_default_temperature():
    logits = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    loss_module = SoftTargetLoss()
    assert loss_module.temperature == 4.0
    assert loss_module(logits, logits.clone()).item() == pytest.approx(
        0.0, abs=1e-6)


def test_hint_loss_zero_and_hand_mse():
    hint_loss = MODELS.build(dict(type='HintLoss', loss_weight=2.0))
    regressed = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    assert hint_loss(regressed, regressed.clone()).item() == 0.0
    hint = torch.tensor([0.0, 4.0, 3.0, 5.0]).reshape(1, 1, 2, 2)
    # Squared errors 1, 4, 0, 1 -> mean 1.5, times loss_weight 2.
    assert hint_loss(regressed, hint).item() == pytest.approx(3.0)


def test_gradients_stop_at_the_teacher():
    torch.manual_seed(0)
    student_logits = torch.randn(3, 5, requires_grad=True)
    teacher_logits = torch.randn(3, 5, requires_grad=True)
    student_feature = torch.randn(3, 4, 2, 2, requires_grad=True)
    teacher_feature = torch.randn(3, 4, 2, 2, requires_grad=True)
    loss = SoftTargetLoss()(student_logits, teacher_logits) + HintLoss()(
        student_feature, teacher_feature)
    loss.backward()
    assert teacher_logits.grad is None
    assert teacher_feature.grad is None
    assert student_logits.grad.abs().sum() > 0
    assert student_feature.grad.abs().sum() > 0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match='same shape'):
        HintLoss()(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r'shape \(B, K\)'):
        SoftTargetLoss()(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match='temperature must be > 0'):
        SoftTargetLoss(temperature=0.0)


def test_soft_target_loss_weights_each_sample_and_divides_by_the_batch():
    student = torch.zeros(2, 2)
    teacher = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    # Sample 0 at T=1: KL((0.75, 0.25) || (0.5, 0.5)) = 0.75 ln 1.5 + 0.25 ln 0.5;
    # sample 1: the same distribution, KL 0.
    kl0 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    loss = SoftTargetLoss(temperature=1.0)
    assert loss(student, teacher).item() == pytest.approx(kl0 / 2, abs=1e-6)
    assert loss(student, teacher, weight=torch.tensor([1.0, 0.0])).item() == \
        pytest.approx(kl0 / 2, abs=1e-6)
    assert loss(student, teacher, weight=torch.tensor([0.0, 1.0])).item() == 0.0
    with pytest.raises(ValueError, match=r'weight must have shape \(B,\) = \(2,\)'):
        loss(student, teacher, weight=torch.ones(3))


def test_hint_loss_weights_each_sample_mean_squared_error():
    pred = torch.tensor([[[[1.0, 3.0]]], [[[2.0, 2.0]]]])  # (2, 1, 1, 2)
    hint = torch.zeros(2, 1, 1, 2)
    # Per-sample MSE: (1 + 9) / 2 = 5 and (4 + 4) / 2 = 4.
    loss = HintLoss(loss_weight=2.0)
    assert loss(pred, hint).item() == pytest.approx(2.0 * 4.5)
    assert loss(pred, hint, weight=torch.ones(2)).item() == pytest.approx(2.0 * 4.5)
    assert loss(pred, hint, weight=torch.tensor([1.0, 0.0])).item() == \
        pytest.approx(2.0 * 5 / 2)
    with pytest.raises(ValueError, match='weight must have shape'):
        loss(pred, hint, weight=torch.ones(2, 1))
