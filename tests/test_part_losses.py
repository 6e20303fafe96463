import math

import pytest
import torch
import torch.nn.functional as F

import mmdaf  # noqa: F401  (registers the losses)
from mmdaf.models.losses import (
    ConcentrateLoss,
    PartAreaLoss,
    PartOverlapLoss,
    PartRankingLoss,
)


# ---------------------------------------------------------------- R_IOU
def test_overlap_zero_for_disjoint_boxes():
    boxes = torch.tensor([[[0.0, 0.0, 4.0, 4.0], [5.0, 5.0, 9.0, 9.0]]])
    assert PartOverlapLoss()(boxes).item() == 0.0


def test_overlap_dice_value_by_hand():
    # B1 = [0,4]x[0,4] (16), B2 = [2,6]x[2,6] (16), B1 & B2 = [2,4]x[2,4] (4).
    # dice = 2 * 4 / (16 + 16) = 0.25; alpha = 2 -> 0.5.
    boxes = torch.tensor([[[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 6.0, 6.0]]])
    assert PartOverlapLoss(alpha=2.0)(boxes).item() == pytest.approx(0.5)
    # Add a disjoint B3: pairs (1,2)=0.25, (1,3)=0, (2,3)=0 -> mean 1/12.
    # Second image: two identical boxes + one disjoint -> (1 + 0 + 0) / 3.
    boxes = torch.tensor([
        [[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 6.0, 6.0], [10.0, 10.0, 12.0, 12.0]],
        [[0.0, 0.0, 3.0, 5.0], [0.0, 0.0, 3.0, 5.0], [10.0, 10.0, 12.0, 12.0]],
    ])
    expected = (0.25 / 3 + 1.0 / 3) / 2
    loss = PartOverlapLoss(loss_weight=3.0)(boxes)
    assert loss.item() == pytest.approx(3.0 * expected)


def test_overlap_zero_area_boxes_are_finite():
    boxes = torch.tensor([[[2.0, 2.0, 2.0, 6.0], [2.0, 2.0, 2.0, 6.0],
                           [0.0, 0.0, 4.0, 4.0]]], requires_grad=True)
    loss = PartOverlapLoss()(boxes)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(boxes.grad).all()


# ---------------------------------------------------------------- R_area
def _box(width, height):
    return [0.0, 0.0, float(width), float(height)]


def test_area_zero_at_target_and_symmetric_growth():
    # S = 400, N = 4 -> target area 100.
    area = torch.tensor([400.0])
    loss_fn = PartAreaLoss(beta=1.0)
    at_target = torch.tensor([[_box(10, 10)] * 4])
    assert loss_fn(at_target, area).item() == 0.0
    # 200 px^2: log 2 = 0.6931 < beta -> 0.5 * log(2)^2 = 0.240227 per box;
    # 50 px^2 gives the same (symmetric in the ratio).
    twice = torch.tensor([[_box(20, 10)] * 4])
    half = torch.tensor([[_box(5, 10)] * 4])
    assert loss_fn(twice, area).item() == pytest.approx(0.5 * math.log(2)**2)
    assert loss_fn(half, area).item() == pytest.approx(0.5 * math.log(2)**2)
    # 400 px^2: log 4 = 1.386 > beta -> linear part: log 4 - 0.5.
    four = torch.tensor([[_box(20, 20)] * 4])
    assert loss_fn(four, area).item() == pytest.approx(math.log(4) - 0.5)
    # Mean over the boxes of one image: (0 + 0.2402 + 0.2402 + 0.8863) / 4.
    mixed = torch.tensor([[_box(10, 10), _box(20, 10), _box(5, 10), _box(20, 20)]])
    expected = (2 * 0.5 * math.log(2)**2 + math.log(4) - 0.5) / 4
    assert loss_fn(mixed, area).item() == pytest.approx(expected)


def test_area_num_parts_override_and_zero_width_finite():
    # num_parts=2: target = 400 / 2 = 200 -> a 20 x 10 box costs nothing.
    boxes = torch.tensor([[_box(20, 10)] * 4])
    assert PartAreaLoss(num_parts=2)(boxes, torch.tensor([400.0])).item() == 0.0
    # Zero-width box: area clamped to 1 -> |log(1 / 100)| - 0.5.
    degenerate = torch.tensor([[[3.0, 0.0, 3.0, 10.0]]], requires_grad=True)
    loss = PartAreaLoss(num_parts=1)(degenerate, torch.tensor([100.0]))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(100) - 0.5)
    assert torch.isfinite(degenerate.grad).all()


# ---------------------------------------------------------------- ranking
def test_ranking_zero_when_orders_agree_with_margin():
    scores = torch.tensor([[3.0, 2.0, 0.5]])
    part_ce = torch.tensor([[0.1, 0.2, 0.9]])  # part 0 most confident
    assert PartRankingLoss(margin=1.0)(scores, part_ce).item() == 0.0


def test_ranking_margin_exact_for_wrong_or_tied_order():
    ranking = PartRankingLoss(margin=1.0)
    part_ce = torch.tensor([[0.1, 0.5]])
    # Equal scores: max(0, 1 - 0) = 1 exactly.
    assert ranking(torch.tensor([[0.3, 0.3]]), part_ce).item() == 1.0
    # Wrong order: max(0, 1 - (0 - 2)) = 3.
    assert ranking(torch.tensor([[0.0, 2.0]]), part_ce).item() == 3.0
    # Equal CE -> no pair; batch mean of (1, 0) = 0.5; loss_weight 2 -> 1.0.
    scores = torch.tensor([[0.3, 0.3], [0.0, 5.0]])
    part_ce = torch.tensor([[0.1, 0.5], [0.7, 0.7]])
    assert PartRankingLoss(loss_weight=2.0)(scores, part_ce).item() == 1.0
    # Three parts, ce order 2 < 0 < 1, scores (1, 0.5, 1.2): pairs
    # (2,0): 1 - 0.2 = 0.8, (2,1): 1 - 0.7 = 0.3, (0,1): 1 - 0.5 = 0.5 -> 1.6.
    value = ranking(torch.tensor([[1.0, 0.5, 1.2]]), torch.tensor([[0.3, 0.4, 0.1]]))
    assert value.item() == pytest.approx(1.6)


def test_ranking_sends_no_gradient_through_targets():
    logits = torch.randn(2, 3, requires_grad=True)
    part_ce = -F.log_softmax(logits, dim=1)
    scores = torch.zeros(2, 3, requires_grad=True)
    PartRankingLoss()(scores, part_ce).backward()
    assert logits.grad is None
    assert scores.grad.abs().sum() > 0


# ---------------------------------------------------------------- concentrate
def test_concentrate_equals_ce_of_hand_averaged_logits():
    torch.manual_seed(0)
    part_logits = torch.randn(2, 4, 5)
    labels = torch.tensor([3, 1])
    averaged = (part_logits[:, 0] + part_logits[:, 1] + part_logits[:, 2]) / 3
    expected = F.cross_entropy(averaged, labels)
    loss = ConcentrateLoss(top_m=3, loss_weight=0.5)(part_logits, labels)
    assert loss.item() == pytest.approx(0.5 * expected.item(), rel=1e-6)
    # top_m beyond N averages all parts.
    all_parts = F.cross_entropy(part_logits.mean(1), labels)
    assert ConcentrateLoss(top_m=9)(part_logits, labels).item() == pytest.approx(
        all_parts.item(), rel=1e-6)


# ---------------------------------------------------------------- registries
def test_losses_build_from_their_registries():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    # _scope_ as in configs: the process-wide default scope may be another one.
    ranking = MMDET_MODELS.build(dict(_scope_='mmdet', type='PartRankingLoss', margin=0.5))
    assert isinstance(ranking, PartRankingLoss) and ranking.margin == 0.5
    assert isinstance(MMDET_MODELS.build(dict(_scope_='mmdet', type='PartOverlapLoss')),
                      PartOverlapLoss)
    assert isinstance(MMDET_MODELS.build(dict(_scope_='mmdet', type='PartAreaLoss')),
                      PartAreaLoss)
    concentrate = MMPRETRAIN_MODELS.build(
        dict(_scope_='mmpretrain', type='ConcentrateLoss', top_m=2))
    assert isinstance(concentrate, ConcentrateLoss) and concentrate.top_m == 2


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match='scores and part_ce'):
        PartRankingLoss()(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match='boxes must be'):
        PartOverlapLoss()(torch.zeros(2, 4))
    with pytest.raises(ValueError, match='object_area'):
        PartAreaLoss()(torch.zeros(2, 3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match='top_m'):
        ConcentrateLoss(top_m=0)
