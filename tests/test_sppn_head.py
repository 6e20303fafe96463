import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torchvision.ops import box_iou

import mmdaf  # noqa: F401  (registers SPPNHead and its losses)
from mmdaf.models.dense_heads import SPPNHead
from mmdaf.models.utils import LocationHeatmap

NUM_ANCHORS = 6  # 3 ratios x 2 scales per octave (default anchor generator)


def _head(**kwargs):
    cfg = dict(in_channels=16, feat_channels=16, stacked_convs=1, num_parts=4)
    cfg.update(kwargs)
    return SPPNHead(**cfg)


def _fpn_feats(batch, height, width, channels=16):
    """Random FPN-like levels at strides 8, 16, 32 of a height x width input."""
    sizes = [(-(-height // s), -(-width // s)) for s in (8, 16, 32)]
    return [torch.randn(batch, channels, h, w) for h, w in sizes]


@pytest.fixture(scope='module')
def real_features():
    """ResNet-18 C3..C5 and mmdet FPN levels of a random 2 x 3 x 100 x 120 input.

    100 x 120 is not a multiple of 32: the stride-8/16/32 grids are 13 x 15,
    7 x 8 and 4 x 4 (rounded up). No gradient: the tests train only the head.
    """
    torch.manual_seed(0)
    with torch.no_grad():
        return _real_features(100, 120)


def _real_features(height, width, batch=2):
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    backbone = MMPRETRAIN_MODELS.build(
        dict(type='ResNet', depth=18, out_indices=(1, 2, 3)))
    fpn = MMDET_MODELS.build(
        dict(_scope_='mmdet', type='FPN', in_channels=[128, 256, 512],
             out_channels=64, num_outs=3))
    imgs = torch.randn(batch, 3, height, width)
    stages = backbone(imgs)
    return stages, fpn(stages)


def test_builds_from_mmdet_scoped_config_under_mmpretrain_scope():
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    head = MODELS.build(
        dict(_scope_='mmdet', type='SPPNHead', in_channels=16, feat_channels=8,
             num_parts=3))
    assert isinstance(head, SPPNHead)
    assert head.num_anchors == NUM_ANCHORS and head.num_parts == 3
    # Square-equivalent anchor sides: 48, 68 | 96, 136 | 192, 272 px.
    base = head.prior_generator.base_anchors
    square_sides = [(a[:, 2] - a[:, 0]).mul(a[:, 3] - a[:, 1]).sqrt() for a in base]
    sides = sorted({round(s.item()) for level in square_sides for s in level})
    assert sides == [48, 68, 96, 136, 192, 272]
    # RetinaHead-style init: N(0, 0.01) weights, zero bias on every conv.
    head.init_weights()
    assert torch.equal(head.score_conv.bias, torch.zeros(NUM_ANCHORS))
    assert head.reg_conv.weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_forward_shapes_per_level():
    head = _head()
    feats = _fpn_feats(2, 64, 96)
    scores, deltas = head(feats)
    assert [tuple(s.shape) for s in scores] == [(2, 6, 8, 12), (2, 6, 4, 6),
                                                (2, 6, 2, 3)]
    assert [tuple(d.shape) for d in deltas] == [(2, 24, 8, 12), (2, 24, 4, 6),
                                                (2, 24, 2, 3)]
    with pytest.raises(ValueError, match='3 feature levels'):
        head(feats[:2])


def test_mask_keeps_exactly_the_anchors_centred_in_it():
    head = _head()
    feats = _fpn_feats(1, 64, 64)  # levels 8x8, 4x4, 2x2
    anchors = torch.cat(head.prior_generator.grid_priors(
        [f.shape[-2:] for f in feats], device='cpu'))
    assert anchors.shape[0] == (64 + 16 + 4) * NUM_ANCHORS
    # Centres: stride-8 cell (y, x) -> (8x + 4, 8y + 4); stride 16 -> (16x + 8, ..)
    # lies in mask cell (2y + 1, 2x + 1); stride 32 -> mask cell (4y + 2, 4x + 2).
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[0, 0, 1, 1] = mask[0, 0, 2, 5] = mask[0, 0, 2, 2] = True
    kept = head.anchor_candidates(anchors, (64, 64), mask, 1)[0]

    def level_block(offset, width, y, x):
        start = offset + (y * width + x) * NUM_ANCHORS
        return list(range(start, start + NUM_ANCHORS))

    expected = (level_block(0, 8, 1, 1) + level_block(0, 8, 2, 2)
                + level_block(0, 8, 2, 5)  # stride 8: the three cells
                + level_block(64 * 6, 4, 0, 0)  # stride 16 cell (0,0) -> (1,1)
                + level_block(80 * 6, 2, 0, 0))  # stride 32 cell (0,0) -> (2,2)
    assert kept.nonzero().squeeze(1).tolist() == sorted(expected)
    centre = (anchors[(2 * 8 + 5) * 6, :2] + anchors[(2 * 8 + 5) * 6, 2:]) / 2
    assert centre.tolist() == [44.0, 20.0]
    # A coarser mask (4 x 4, 16 px cells) is looked up at its own resolution.
    coarse = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    coarse[0, 0, 0, 0] = True
    kept = head.anchor_candidates(anchors, (64, 64), coarse, 1)[0]
    expected = (level_block(0, 8, 0, 0) + level_block(0, 8, 0, 1)
                + level_block(0, 8, 1, 0) + level_block(0, 8, 1, 1)
                + level_block(64 * 6, 4, 0, 0))
    assert kept.nonzero().squeeze(1).tolist() == sorted(expected)
    # An empty mask keeps every anchor.
    empty = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    assert head.anchor_candidates(anchors, (64, 64), empty, 1).all()


def test_propose_nms_sorted_and_exactly_n():
    torch.manual_seed(0)
    head = _head(num_parts=4)
    feats = _fpn_feats(3, 128, 128)
    boxes, scores = head.propose(feats, (128, 128))
    assert boxes.shape == (3, 4, 4) and scores.shape == (3, 4)
    assert boxes.requires_grad and scores.requires_grad
    for img_boxes, img_scores in zip(boxes.detach(), scores.detach()):
        iou = box_iou(img_boxes, img_boxes)
        assert (iou - torch.eye(4)).max() <= 0.25 + 1e-6
        assert (img_scores[:-1] >= img_scores[1:]).all()
        assert (img_boxes[:, 0::2] >= 0).all() and (img_boxes[:, 0::2] <= 128).all()
    # The best box is the best anchor overall (nothing can suppress it).
    dense_scores, _ = head(feats)
    best = torch.cat([s.flatten(1) for s in dense_scores], dim=1).max(dim=1).values
    assert torch.equal(scores[:, 0].detach(), best.detach())


def test_propose_fills_up_from_tiny_and_empty_masks():
    torch.manual_seed(0)
    head = _head(num_parts=8)
    feats = _fpn_feats(2, 64, 64)
    tiny = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    tiny[0, 0, 2, 5] = True  # 6 candidates (stride-8 anchors only) < N = 8
    # image 1: empty mask -> all anchors are candidates
    boxes, scores = head.propose(feats, (64, 64), tiny)
    assert boxes.shape == (2, 8, 4) and scores.shape == (2, 8)
    dense_scores, _ = head(feats)
    cell_scores = dense_scores[0][0, :, 2, 5].detach()  # the 6 candidates
    assert set(scores[0].tolist()) <= set(cell_scores.tolist())
    assert set(scores[0].tolist()) == set(cell_scores.tolist())  # all, some twice
    assert torch.isfinite(boxes).all()
    assert len(set(scores[1].tolist())) == 8  # 504 candidates: no repeats needed


def test_losses_finite_for_zero_width_boxes():
    head = _head()
    boxes = torch.tensor([[[5.0, 5.0, 5.0, 20.0], [5.0, 5.0, 5.0, 20.0],
                           [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 30.0, 30.0]]],
                         requires_grad=True)
    scores = torch.zeros(1, 4, requires_grad=True)
    losses = head.loss(boxes, scores, torch.rand(1, 4), torch.tensor([400.0]))
    assert set(losses) == {'loss_rank', 'loss_overlap', 'loss_area'}
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(boxes.grad).all()


def test_rank_loss_reaches_score_conv_only_and_not_the_targets():
    torch.manual_seed(0)
    head = _head()
    feats = _fpn_feats(2, 64, 64)
    boxes, scores = head.propose(feats, (64, 64))
    backbone_weight = torch.ones(1, requires_grad=True)
    part_ce = backbone_weight * torch.arange(8.0).view(2, 4).flip(1)  # reversed
    losses = head.loss(boxes, scores, part_ce, torch.tensor([1000.0, 1000.0]))
    assert losses['loss_rank'] > 0
    losses['loss_rank'].backward()
    assert head.score_conv.weight.grad.abs().sum() > 0
    assert head.reg_conv.weight.grad is None
    assert backbone_weight.grad is None


def test_overlap_and_area_losses_reach_regression_conv(real_features):
    torch.manual_seed(0)
    _, fpn_feats = real_features
    head = _head(in_channels=64)
    head.init_weights()  # small deltas: boxes stay close to their anchors
    # One object cell: the 6 candidates share a centre, so the boxes overlap.
    object_mask = torch.zeros(2, 1, 13, 15, dtype=torch.bool)
    object_mask[:, :, 6, 7] = True
    boxes, scores = head.propose(fpn_feats, (100, 120), object_mask)
    losses = head.loss(boxes, scores, torch.rand(2, 4), torch.tensor([3000.0, 500.0]))
    assert losses['loss_overlap'] > 0 and losses['loss_area'] > 0
    (losses['loss_overlap'] + losses['loss_area']).backward()
    assert head.reg_conv.weight.grad.abs().sum() > 0
    assert head.score_conv.weight.grad is None


def test_predict_on_non_multiple_of_32_input(real_features):
    torch.manual_seed(0)
    stages, fpn_feats = real_features
    assert [tuple(s.shape[-2:]) for s in stages] == [(13, 15), (7, 8), (4, 4)]
    heatmap = LocationHeatmap()(stages, (100, 120))
    head = _head(in_channels=64)
    metas = [dict(img_shape=(100, 120)), dict(img_shape=(100, 120))]
    results = head.predict(fpn_feats, metas, heatmap.object_mask)
    assert isinstance(results, list) and len(results) == 2
    for result in results:
        assert isinstance(result, InstanceData)
        assert result.bboxes.shape == (4, 4) and result.bboxes.dtype == torch.float32
        assert result.scores.shape == (4, )
        assert not result.bboxes.requires_grad and not result.scores.requires_grad
        assert (result.bboxes[:, 0::2] <= 120).all()
        assert (result.bboxes[:, 1::2] <= 100).all()
        assert (result.bboxes >= 0).all()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='pre_nms_topk'):
        _head(num_parts=4, pre_nms_topk=2)
    with pytest.raises(ValueError, match='nms_iou_thr'):
        _head(nms_iou_thr=0.0)
    head = _head()
    with pytest.raises(ValueError, match='part_ce'):
        head.loss(torch.zeros(1, 4, 4), torch.zeros(1, 4), torch.zeros(1, 3),
                  torch.zeros(1))
    with pytest.raises(ValueError, match='object_mask'):
        head.propose(_fpn_feats(1, 64, 64), (64, 64), torch.zeros(1, 8, 8).bool())


def test_tower_norm_groups_puts_group_norm_between_conv_and_relu():
    torch.manual_seed(0)
    head = _head(feat_channels=8, stacked_convs=2, tower_norm_groups=4)
    kinds = [type(layer).__name__ for layer in head.score_tower]
    assert kinds == ['Conv2d', 'GroupNorm', 'ReLU', 'Conv2d', 'GroupNorm', 'ReLU']
    assert head.score_tower[1].num_groups == 4
    plain = _head(feat_channels=8, stacked_convs=2)
    assert [type(layer).__name__ for layer in plain.score_tower] == \
        ['Conv2d', 'ReLU', 'Conv2d', 'ReLU']
    # Normalised: with the std-0.01 init, the first conv's output per group has
    # mean 0 and variance 1 after the norm, so about half of the ReLUs pass.
    head.init_weights()
    # Inputs of std 10: the conv outputs' variance (about 1) then dwarfs the
    # norm's eps (1e-5), which at std 1 (variance about 0.01) already took
    # 1e-3 off the normalised variance.
    feat = 10 * torch.randn(2, head.score_tower[0].in_channels, 6, 6)
    normed = head.score_tower[1](head.score_tower[0](feat))
    grouped = normed.view(2, 4, -1)
    torch.testing.assert_close(grouped.mean(dim=-1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(grouped.var(dim=-1, unbiased=False), torch.ones(2, 4),
                               atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match=r'tower_norm_groups must be 0 or divide '
                       r'feat_channels \(8\), got 3'):
        _head(feat_channels=8, tower_norm_groups=3)


def test_state_dict_keys():
    """Checkpoints name the towers and convs so; the caches hold no state."""
    head = _head(tower_norm_groups=4)
    head.propose(_fpn_feats(1, 64, 64), (64, 64))  # fills the prior cache
    assert list(head.state_dict()) == [
        'score_tower.0.weight', 'score_tower.0.bias', 'score_tower.1.weight',
        'score_tower.1.bias', 'score_conv.weight', 'score_conv.bias',
        'reg_tower.0.weight', 'reg_tower.0.bias', 'reg_tower.1.weight',
        'reg_tower.1.bias', 'reg_conv.weight', 'reg_conv.bias']
    assert list(_head(regress_boxes=False).state_dict()) == [
        'score_tower.0.weight', 'score_tower.0.bias', 'score_conv.weight',
        'score_conv.bias']
