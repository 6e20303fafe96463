"""Part-sized proposals and sampled ranking anchors: ``FinestLevelFPN`` and
``SPPNHead`` (fixed anchors, ``rank_samples``, ``rank_interval``), on
hand-made inputs. What the classifier ranks them by is tested with the
ranking targets (``tests/test_part_image_rank_target.py``,
``tests/test_window_rank_target.py``) and in ``tests/test_daf_classifier.py``."""
from unittest.mock import patch

import pytest
import torch
from test_sppn_head import _fpn_feats, _head

STRIDE8_ONLY = dict(type='AnchorGenerator', strides=[8], ratios=[0.5, 1.0, 2.0],
                    octave_base_scale=1.25, scales_per_octave=2, center_offset=0.5)


def _fixed_head(**kwargs):
    """A stride-8, fixed-anchor head on one level: proposals are exact anchors."""
    return _head(anchor_generator=STRIDE8_ONLY, regress_boxes=False, **kwargs)


def _p3(feats):
    return feats[:1]


def _fpn_and_finest_with_the_same_weights():
    """mmdet's 3-level FPN and a FinestLevelFPN given its laterals and P3 conv."""
    from mmdet.registry import MODELS as MMDET_MODELS
    torch.manual_seed(0)
    fpn = MMDET_MODELS.build(dict(_scope_='mmdet', type='FPN', in_channels=[8, 16, 32],
                                  out_channels=4, num_outs=3))
    finest = MMDET_MODELS.build(dict(_scope_='mmdet', type='FinestLevelFPN',
                                     in_channels=[8, 16, 32], out_channels=4))
    for mine, theirs in zip(finest.lateral_convs, fpn.lateral_convs):
        mine.load_state_dict(theirs.state_dict())
    finest.output_conv.load_state_dict(fpn.fpn_convs[0].state_dict())
    return fpn, finest


def test_finest_level_fpn_is_mmdet_fpn_first_output():
    fpn, finest = _fpn_and_finest_with_the_same_weights()
    # Odd sizes: the top-down path must upsample to each finer level's size.
    feats = [torch.randn(2, 8, 13, 15), torch.randn(2, 16, 7, 8), torch.randn(2, 32, 4, 4)]
    out = finest(feats)
    assert len(out) == 1 and out[0].shape == (2, 4, 13, 15)
    torch.testing.assert_close(out[0], fpn(feats)[0])
    # Every parameter is used (no coarser output convs to leave unused).
    out[0].sum().backward()
    assert all(p.grad is not None for p in finest.parameters())
    with pytest.raises(ValueError, match='expects 3 levels'):
        finest(feats[:2])


def test_finest_level_fpn_with_a_stride16_c5_is_mmdet_fpn_bit_for_bit():
    """C4 and C5 of the same size (the synthetic configs' stride-16 C5): the
    skipped same-size resize changes nothing."""
    fpn, finest = _fpn_and_finest_with_the_same_weights()
    feats = [torch.randn(2, 8, 16, 14), torch.randn(2, 16, 8, 7), torch.randn(2, 32, 8, 7)]
    with torch.no_grad():
        assert torch.equal(finest(feats)[0], fpn(feats)[0])


def test_stride8_head_proposes_part_sized_anchors_only():
    torch.manual_seed(0)
    head = _fixed_head()
    feats = _p3(_fpn_feats(2, 64, 64))  # 8x8
    scores, _ = head(feats)
    assert len(scores) == 1 and scores[0].shape == (2, 6, 8, 8)
    boxes, _ = head.propose(feats, (64, 64))
    sides = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])).sqrt()
    # Square-equivalent sides 10 and 14 px (clipped at the border: smaller).
    assert sides.max() <= 10 * 2**0.5 + 1e-4


def test_sampled_anchors_lie_in_the_mask_and_carry_their_scores():
    torch.manual_seed(0)
    head = _fixed_head(rank_samples=5)
    feats = _p3(_fpn_feats(2, 64, 64))
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[0, 0, 1, 1] = mask[0, 0, 6, 3] = True  # 12 candidate anchors
    mask[1, 0, 2, 5] = True  # 6 candidates
    generator = torch.Generator().manual_seed(0)
    boxes, scores = head.sample_anchors(feats, (64, 64), mask, generator=generator)
    assert boxes.shape == (2, 5, 4) and scores.shape == (2, 5)
    assert scores.requires_grad
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2
    cells = (centres // 8).long()  # (x, y) cell of each centre
    assert {tuple(c) for c in cells[0].tolist()} <= {(1, 1), (3, 6)}
    assert {tuple(c) for c in cells[1].tolist()} == {(5, 2)}
    # Without replacement: five different anchors (ratios x scales) of one cell.
    assert len({tuple(b) for b in boxes[1].tolist()}) == 5
    # Each score is the dense score of its anchor.
    dense = head(feats)[0][0]  # (2, 6, 8, 8)
    anchors = head.prior_generator.grid_priors([(8, 8)], device='cpu')[0]
    for img in range(2):
        for box, score in zip(boxes[img], scores[img]):
            index = int(torch.isclose(anchors.clamp(0, 64), box).all(dim=1).nonzero())
            cell, anchor = divmod(index, 6)
            assert torch.isclose(score, dense[img, anchor, cell // 8, cell % 8])


def test_too_few_candidates_are_drawn_with_replacement():
    head = _fixed_head(rank_samples=8)
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[0, 0, 4, 4] = True  # 6 anchors for 8 draws
    boxes, _ = head.sample_anchors(_p3(_fpn_feats(1, 64, 64)), (64, 64), mask)
    centres = (boxes[0, :, :2] + boxes[0, :, 2:]) / 2
    assert boxes.shape == (1, 8, 4) and torch.all(centres == 36.0)


def test_rank_loss_orders_proposals_and_samples_together():
    head = _head(loss_rank=dict(type='PartRankingLoss', margin=1.0, loss_weight=0.5))
    boxes = torch.tensor([[[0., 0., 10., 10.]]])
    # By cross entropy: sample 0 (0.5) < proposal (1.0) < sample 1 (2.0).
    # Hinges: s0 over p 1 - 0.5 = 0.5; s0 over s1 1 - (0.5 - 2) = 2.5;
    # p over s1 1 - (0 - 2) = 3.0. Sum 6.0, weight 0.5 -> 3.0.
    losses = head.loss(boxes, torch.tensor([[0.0]]), torch.tensor([[1.0]]),
                       torch.tensor([400.]), sample_scores=torch.tensor([[0.5, 2.0]]),
                       sample_ce=torch.tensor([[0.5, 2.0]]))
    assert losses['loss_rank'].item() == pytest.approx(3.0)
    # The overlap and area priors see the proposals only.
    alone = head.loss(boxes, torch.tensor([[0.0]]), torch.tensor([[1.0]]),
                      torch.tensor([400.]))
    assert alone['loss_rank'].item() == 0.0
    assert losses['loss_area'].item() == alone['loss_area'].item()


def test_rank_samples_arguments_are_checked():
    with pytest.raises(ValueError, match='rank_samples must be >= 0, got -1'):
        _head(rank_samples=-1)
    head = _head()
    with pytest.raises(ValueError, match='given together'):
        head.loss(torch.zeros(1, 4, 4), torch.zeros(1, 4), torch.zeros(1, 4),
                  torch.ones(1), sample_scores=torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r'both be \(B, K\)'):
        head.loss(torch.zeros(1, 4, 4), torch.zeros(1, 4), torch.zeros(1, 4),
                  torch.ones(1), sample_scores=torch.zeros(1, 2),
                  sample_ce=torch.zeros(1, 3))


def test_propose_and_sample_is_propose_plus_a_draw_from_one_dense_pass():
    torch.manual_seed(0)
    head = _fixed_head(rank_samples=4)
    feats = _p3(_fpn_feats(2, 64, 64))
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[:, 0, 2:5, 3:6] = True
    boxes, scores = head.propose(feats, (64, 64), mask)
    with patch.object(head, 'forward', wraps=head.forward) as forward:
        both = head.propose_and_sample(feats, (64, 64), mask)
    assert forward.call_count == 1
    torch.testing.assert_close(both[0], boxes)
    torch.testing.assert_close(both[1], scores)
    assert both[2].shape == (2, 4, 4) and both[3].shape == (2, 4)
    centres = (both[2][..., :2] + both[2][..., 2:]) / 2
    assert ((centres[..., 0] >= 24) & (centres[..., 0] < 48)
            & (centres[..., 1] >= 16) & (centres[..., 1] < 40)).all()


def test_rank_interval_arguments_are_checked():
    with pytest.raises(ValueError, match='rank_interval must be >= 1, got 0'):
        _head(rank_samples=2, rank_interval=0)
    with pytest.raises(ValueError, match='rank_interval=4 needs rank_samples > 0'):
        _head(rank_interval=4)


def test_rank_interval_samples_every_kth_step_and_scales_the_loss():
    head = _head(rank_samples=2, rank_interval=3,
                 loss_rank=dict(type='PartRankingLoss', margin=1.0, loss_weight=0.5))
    assert [head.samples_this_step() for _ in range(7)] == [
        True, False, False, True, False, False, True]
    assert not _head().samples_this_step()
    boxes = torch.tensor([[[0., 0., 10., 10.]]])
    scores = torch.tensor([[0.0]], requires_grad=True)
    # The hinges of test_rank_loss_orders_proposals_and_samples_together sum to
    # 6.0; weight 0.5, times the interval 3 -> 9.0.
    ranked = head.loss(boxes, scores, torch.tensor([[1.0]]), torch.tensor([400.]),
                       sample_scores=torch.tensor([[0.5, 2.0]]),
                       sample_ce=torch.tensor([[0.5, 2.0]]))
    assert ranked['loss_rank'].item() == pytest.approx(9.0)
    # A step without samples ranks nothing, not even two proposals in the
    # wrong order, but keeps the scores in the graph.
    two_scores = torch.tensor([[0.0, 5.0]], requires_grad=True)
    off = head.loss(torch.tensor([[[0., 0., 10., 10.], [20., 20., 30., 30.]]]),
                    two_scores, torch.tensor([[1.0, 2.0]]), torch.tensor([400.]))
    assert off['loss_rank'].item() == 0.0 and off['loss_rank'].requires_grad
    off['loss_rank'].backward()
    assert torch.equal(two_scores.grad, torch.zeros(1, 2))


def test_sppn_loss_without_a_ranking_target_only_on_a_step_that_ranks_nothing():
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]])
    scores = torch.tensor([[0.5, 0.1]], requires_grad=True)
    area = torch.tensor([400.0])
    with pytest.raises(ValueError, match='part_ce is None, but this step ranks the boxes '
                       r'\(rank_interval=1, samples not given\)'):
        _head().loss(boxes, scores, None, area)
    head = _head(rank_samples=2, rank_interval=2)
    assert head.loss(boxes, scores, None, area)['loss_rank'].item() == 0.0


def test_fixed_anchor_head_proposes_clipped_anchors_and_has_no_regression_branch():
    torch.manual_seed(0)
    head = _head(regress_boxes=False)
    assert not hasattr(head, 'reg_conv')
    size = 64
    with torch.no_grad():
        boxes, _ = head.propose(_fpn_feats(2, size, size), (size, size))
    sizes = [(size // stride_h, size // stride_w)
             for stride_w, stride_h in head.prior_generator.strides]
    anchors = torch.cat(head.prior_generator.grid_priors(sizes, device='cpu'))
    anchors = torch.stack([anchors[:, 0].clamp(0, size), anchors[:, 1].clamp(0, size),
                           anchors[:, 2].clamp(0, size), anchors[:, 3].clamp(0, size)], 1)
    assert boxes.shape == (2, head.num_parts, 4)
    for image_boxes in boxes:
        for box in image_boxes:
            assert torch.isclose(anchors, box).all(dim=1).any(), box
