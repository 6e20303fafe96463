"""Part-sized proposals and sampled ranking anchors: ``FinestLevelFPN``,
``SPPNHead(rank_samples)`` and ``DAFClassifier.single_box_ce``, on hand-made
inputs."""
from unittest.mock import patch

import pytest
import torch
import torch.nn.functional as F
from test_daf_training_switches import batch, build, running_stats, student_cfg
from test_sppn_head import _fpn_feats, _head

from mmdaf.models.losses import PartRankingLoss
from mmdaf.models.utils import crop_around_boxes

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


def _rank_sampling_model(single_box_crop: int = 0, **head_overrides):
    head = dict(student_cfg().sppn_head, rank_samples=3, **head_overrides)
    return build(sppn_head=head, single_box_crop=single_box_crop)


def test_single_box_ce_is_the_ce_of_one_kept_box_without_gradient():
    model = _rank_sampling_model().train()
    data = batch()
    labels = torch.tensor([0, 1])
    boxes = torch.tensor([[[0., 0., 16., 16.], [8., 8., 40., 24.]],
                          [[30., 30., 64., 64.], [0., 20., 12., 60.]]])
    before = running_stats(model.backbone)
    ce = model.single_box_ce(data['inputs'], boxes, labels)
    assert ce.shape == (2, 2) and ce.dtype == torch.float32 and not ce.requires_grad
    # part_bn='clean' without recorded statistics: running statistics, untouched.
    after = running_stats(model.backbone)
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.eval()
    for img in range(2):
        for k in range(2):
            part = model.part_image_generator(data['inputs'][img:img + 1],
                                              boxes[img:img + 1, k:k + 1])
            with torch.no_grad():
                logits = model.student_logits(model.backbone(part))
            expected = F.cross_entropy(logits, labels[img:img + 1])
            torch.testing.assert_close(ce[img, k], expected)


def test_training_step_ranks_proposals_with_the_sampled_anchors():
    model = _rank_sampling_model(
        loss_rank=dict(type='PartRankingLoss', margin=1.0, loss_weight=1.0)).train()
    data = batch()
    with torch.no_grad():
        student = model.run_student(data['inputs'])
    assert student.sample_boxes.shape == (2, 3, 4)
    assert student.sample_scores.shape == (2, 3)
    model.eval()
    with torch.no_grad():
        assert model.run_student(data['inputs']).sample_boxes is None

    model.train()
    captured = {}
    head_loss = model.sppn_head.loss

    def record_loss(*args, **kwargs):
        captured.update(args=args, kwargs=kwargs)
        return head_loss(*args, **kwargs)

    with patch.object(model.sppn_head, 'loss', side_effect=record_loss):
        losses = model(**data, mode='loss')
    _, scores, part_ce, _ = captured['args']
    sample_scores, sample_ce = (captured['kwargs']['sample_scores'],
                                captured['kwargs']['sample_ce'])
    assert sample_scores.shape == (2, 3) and sample_scores.requires_grad
    assert sample_ce.shape == (2, 3) and not sample_ce.requires_grad
    assert torch.isfinite(sample_ce).all() and (sample_ce > 0).all()
    # loss_rank is the hinge over all 4 + 3 boxes (part_loss_scale 1, weight 1).
    ranking = PartRankingLoss(margin=1.0)
    expected = ranking(torch.cat([scores, sample_scores], 1),
                       torch.cat([part_ce, sample_ce], 1))
    torch.testing.assert_close(losses['loss_rank'], expected)
    assert not torch.isclose(expected, ranking(scores, part_ce))


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


def test_training_steps_with_rank_interval_draw_samples_on_schedule():
    model = _rank_sampling_model(rank_interval=2).train()
    data = batch()
    drawn = []
    for _ in range(4):
        with torch.no_grad():
            drawn.append(model.run_student(data['inputs']).sample_boxes is not None)
    assert drawn == [True, False, True, False]
    # Evaluation neither draws nor advances the schedule.
    model.eval()
    with torch.no_grad():
        assert model.run_student(data['inputs']).sample_boxes is None
    model.train()
    losses = model(**data, mode='loss')  # the 5th training forward: ranks
    assert losses['loss_rank'].item() > 0
    losses = model(**data, mode='loss')  # the 6th: no samples, zero ranking loss
    assert losses['loss_rank'].item() == 0.0


def test_single_box_crop_ranks_by_the_window_around_each_box():
    model = build(sppn_head=dict(student_cfg().sppn_head, rank_samples=2),
                  single_box_crop=16).eval()
    data = batch()
    labels = torch.tensor([0, 1])
    boxes = torch.tensor([[[0., 0., 8., 8.], [20., 20., 30., 28.]],
                          [[50., 50., 64., 64.], [24., 8., 36., 20.]]])
    ce = model.single_box_ce(data['inputs'], boxes, labels)
    assert ce.shape == (2, 2) and not ce.requires_grad
    for img in range(2):
        for k in range(2):
            part = model.part_image_generator(data['inputs'][img:img + 1],
                                              boxes[img:img + 1, k:k + 1])
            window = crop_around_boxes(part, boxes[img, k:k + 1], 16)
            assert window.shape == (1, 3, 16, 16)
            with torch.no_grad():
                logits = model.student_logits(model.backbone(window))
            torch.testing.assert_close(ce[img, k],
                                       F.cross_entropy(logits, labels[img:img + 1]))
    with pytest.raises(ValueError, match='single_box_crop must be >= 0, got -1'):
        build(single_box_crop=-1)
    with pytest.raises(ValueError, match='got scale=0.5, zoom_context=0.0'):
        build(single_box_crop=24, part_images=dict(type='PartImageGenerator', scale=0.5))
    with pytest.raises(ValueError, match='got scale=1.0, zoom_context=2.0'):
        build(single_box_crop=24,
              part_images=dict(type='PartImageGenerator', zoom_context=2.0))


def test_proposal_rank_ce_window_ranks_proposals_by_their_windows_too():
    model = build(sppn_head=dict(student_cfg().sppn_head, rank_samples=3,
                                 loss_rank=dict(type='PartRankingLoss', margin=1.0,
                                                loss_weight=1.0)),
                  single_box_crop=16, proposal_rank_ce='window').train()
    data = batch()
    captured = {}
    head_loss, box_ce = model.sppn_head.loss, model.single_box_ce

    def record_loss(*args, **kwargs):
        captured.update(args=args, kwargs=kwargs)
        return head_loss(*args, **kwargs)

    def record_ce(inputs, boxes, labels, clean_bn_stats=None):
        captured.update(ce_boxes=boxes)
        captured['ce'] = box_ce(inputs, boxes, labels, clean_bn_stats)
        return captured['ce']

    with patch.object(model.sppn_head, 'loss', side_effect=record_loss), \
            patch.object(model, 'single_box_ce', side_effect=record_ce) as ce_calls:
        losses = model(**data, mode='loss')
    # One call on the 4 proposals then the 3 samples of each image.
    assert ce_calls.call_count == 1 and captured['ce_boxes'].shape == (2, 7, 4)
    proposals, scores, part_ce, _ = captured['args']
    torch.testing.assert_close(captured['ce_boxes'][:, :4], proposals)
    torch.testing.assert_close(part_ce, captured['ce'][:, :4])
    torch.testing.assert_close(captured['kwargs']['sample_ce'], captured['ce'][:, 4:])
    expected = PartRankingLoss(margin=1.0)(
        torch.cat([scores, captured['kwargs']['sample_scores']], 1), captured['ce'])
    torch.testing.assert_close(losses['loss_rank'], expected)


def test_proposal_rank_ce_is_checked():
    with pytest.raises(ValueError, match="proposal_rank_ce must be one of "
                       r"\('part_image', 'window'\), got 'crop'"):
        build(proposal_rank_ce='crop')
    # Without windows the samples are whole images like the part images:
    # the proposals keep their part images' cross entropy, one call for the
    # samples alone.
    model = build(sppn_head=dict(student_cfg().sppn_head, rank_samples=3),
                  single_box_crop=0, proposal_rank_ce='window').train()
    data = batch()
    boxes = torch.tensor([[[0., 0., 16., 16.]] * 4, [[8., 8., 24., 24.]] * 4])
    samples = torch.tensor([[[30., 30., 40., 40.]] * 3, [[0., 0., 10., 10.]] * 3])
    part_ce = torch.arange(8.).view(2, 4)
    with patch.object(model, 'single_box_ce', wraps=model.single_box_ce) as ce_calls:
        proposal_ce, sample_ce = model.ranked_sample_ce(
            data['inputs'], boxes, samples, torch.tensor([0, 1]), part_ce)
    assert proposal_ce is part_ce and sample_ce.shape == (2, 3)
    assert ce_calls.call_count == 1 and ce_calls.call_args.args[1] is samples


def test_single_box_ce_crop_argument_overrides_the_configured_window():
    windowed = build(sppn_head=dict(student_cfg().sppn_head, rank_samples=2),
                     single_box_crop=16).eval()
    whole = build(sppn_head=dict(student_cfg().sppn_head, rank_samples=2),
                  single_box_crop=0).eval()
    data = batch()
    labels = torch.tensor([0, 1])
    boxes = torch.tensor([[[0., 0., 8., 8.], [20., 20., 30., 28.]],
                          [[50., 50., 64., 64.], [24., 8., 36., 20.]]])
    # Same seed, same weights: crop=0 is the whole-image model's answer and
    # crop=16 the windowed model's default.
    torch.testing.assert_close(windowed.single_box_ce(data['inputs'], boxes, labels, crop=0),
                               whole.single_box_ce(data['inputs'], boxes, labels))
    torch.testing.assert_close(whole.single_box_ce(data['inputs'], boxes, labels, crop=16),
                               windowed.single_box_ce(data['inputs'], boxes, labels))
    assert not torch.allclose(windowed.single_box_ce(data['inputs'], boxes, labels),
                              whole.single_box_ce(data['inputs'], boxes, labels))
