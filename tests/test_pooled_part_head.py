"""PooledPartHead alone, built from a config dict: the student head on the
last stage averaged in part regions, on a hand-made 4 x 4 feature map of a
64 px input (16 px cells) and a hand-made linear head."""
import math
import re

import pytest
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import mmdaf  # noqa: F401  (registers PooledPartHead)
from mmdaf.models.heads.pooled_part_head import PooledPartHead, move_boxes_at_random

NUM_CLASSES = 4
CHANNELS = 3
SIZE = 64
CELL = 16  # input pixels per cell of the 4 x 4 map
LABELS = torch.tensor([0, 1])


def build_pool(**cfg) -> PooledPartHead:
    return MODELS.build(dict(type='PooledPartHead', **cfg))


def hand_head():
    """LinearClsHead whose logits are (c0 - c1, c1, c2, 0) of a pooled
    feature (c0, c1, c2): readable by hand."""
    head = MODELS.build(dict(type='LinearClsHead', num_classes=NUM_CLASSES,
                             in_channels=CHANNELS))
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1., -1., 0.], [0., 1., 0.], [0., 0., 1.],
                                           [0., 0., 0.]]))
        head.fc.bias.zero_()
    return head


def hand_logits(features: torch.Tensor) -> torch.Tensor:
    c0, c1, c2 = features.unbind(-1)
    return torch.stack([c0 - c1, c1, c2, torch.zeros_like(c0)], dim=-1)


def feature_map(requires_grad: bool = False) -> torch.Tensor:
    """(2, 3, 4, 4): channel 0 is the cell's row, 1 its column, 2 the image
    index + 1."""
    rows = torch.arange(4.0)[:, None].expand(4, 4)
    cols = torch.arange(4.0)[None, :].expand(4, 4)
    feat = torch.stack([torch.stack([rows, cols, torch.full((4, 4), image + 1.0)])
                        for image in range(2)])
    return feat.requires_grad_(requires_grad)


def cell_boxes(cells) -> torch.Tensor:
    """(2, len(cells), 4): per image, boxes covering exactly the given (row, col) cells."""
    boxes = [[col * CELL, row * CELL, (col + 1) * CELL, (row + 1) * CELL]
             for row, col in cells]
    return torch.tensor([boxes] * 2, dtype=torch.float32)


def cell_features(cells, image: int) -> torch.Tensor:
    return torch.tensor([[float(row), float(col), image + 1.0] for row, col in cells])


def test_builds_from_a_config_dict_with_the_documented_defaults():
    pool = build_pool()
    assert isinstance(pool, PooledPartHead)
    assert (pool.top_m, pool.loss_weight, pool.predict, pool.boxes, pool.samples) == (
        3, 1.0, True, 'proposals', False)
    assert pool.needs_proposals and not pool.needs_object_mask
    assert list(pool.parameters()) == []  # the head it calls is the classifier's
    obj = build_pool(boxes='object', top_m=2, loss_weight=0.5, predict=False)
    assert (obj.top_m, obj.loss_weight, obj.predict) == (2, 0.5, False)
    assert obj.needs_object_mask and not obj.needs_proposals
    assert not build_pool(boxes='ground_truth').needs_proposals
    # Sampled anchors come from the SPPN whatever the box source.
    assert build_pool(boxes='ground_truth', samples=True).needs_proposals
    assert build_pool(boxes='random').needs_proposals


@pytest.mark.parametrize('cfg, error, message', [
    (dict(top_m=0), ValueError, 'PooledPartHead: top_m must be >= 1, got 0'),
    (dict(boxes='centre'), ValueError,
     "PooledPartHead: boxes must be one of .* got 'centre'"),
    (dict(boxes='proposals_and_object'), ValueError,
     "boxes must be one of .* got 'proposals_and_object'"),
    (dict(top_k=3), TypeError, "unexpected keyword argument 'top_k'"),
    (dict(warmup=True), TypeError, "unexpected keyword argument 'warmup'"),
])
def test_bad_configs_name_the_key(cfg, error, message):
    with pytest.raises(error, match=message):
        build_pool(**cfg)


def test_proposal_logits_are_the_head_on_the_top_m_proposal_cells():
    pool = build_pool(top_m=2)
    feat = feature_map(requires_grad=True)
    # Four proposals, best first; only the first two (the top M = 2) count.
    cells = [(1, 2), (3, 0), (0, 0), (2, 2)]
    proposals = cell_boxes(cells).requires_grad_()
    pooled = pool(hand_head(), feat, (SIZE, SIZE), proposals)
    assert pooled.shape == (2, 2, NUM_CLASSES) and pooled.dtype == torch.float32
    for image in range(2):
        torch.testing.assert_close(pooled[image],
                                   hand_logits(cell_features(cells[:2], image)))
    # Cell (1, 2) of image 0 by hand: features (1, 2, 1), logits (-1, 2, 1, 0).
    assert pooled[0, 0].tolist() == [-1.0, 2.0, 1.0, 0.0]
    # Gradient into the features, none into the boxes.
    pooled.sum().backward()
    assert feat.grad.abs().sum() > 0 and proposals.grad is None
    # top_m above N pools the N proposals.
    assert build_pool(top_m=5)(hand_head(), feat, (SIZE, SIZE), proposals).shape == (
        2, 4, NUM_CLASSES)


def test_a_box_over_two_cells_averages_them_by_overlap():
    # Cells (0, 0) and (0, 1) of image 1, three quarters of the box in the first.
    box = torch.tensor([[[0.0, 0.0, 16.0, 16.0]], [[4.0, 0.0, 20.0, 16.0]]])
    logits = PooledPartHead.box_logits(hand_head(), feature_map(), box, (SIZE, SIZE))
    assert logits.shape == (2, 1, NUM_CLASSES)
    # Features 0.75 * (0, 0, 2) + 0.25 * (0, 1, 2) = (0, 0.25, 2).
    torch.testing.assert_close(logits[1, 0], torch.tensor([-0.25, 0.25, 2.0, 0.0]))
    torch.testing.assert_close(logits[0, 0], torch.tensor([0.0, 0.0, 1.0, 0.0]))


def test_pooled_loss_is_the_weighted_mean_cross_entropy_of_every_box():
    pool = build_pool(top_m=2, loss_weight=0.5)
    # Image 0 (label 0): logits (2, 0, 0, 0) and (0, 0, 0, 0); image 1 (label 1):
    # (0, 0, 0, 0) twice.
    pooled = torch.zeros(2, 2, NUM_CLASSES)
    pooled[0, 0, 0] = 2.0
    ce_sure = -math.log(math.exp(2) / (math.exp(2) + 3))
    expected = 0.5 * (ce_sure + 3 * math.log(4)) / 4
    losses = pool.loss(pooled, LABELS, hand_head(), feature_map(), (SIZE, SIZE))
    assert set(losses) == {'loss_part_pool'}
    assert losses['loss_part_pool'].item() == pytest.approx(expected, rel=1e-6)
    # Sampled anchors add no loss unless the head trains at them.
    samples = cell_boxes([(0, 0)])
    assert set(pool.loss(pooled, LABELS, hand_head(), feature_map(), (SIZE, SIZE),
                         samples)) == {'loss_part_pool'}


def test_samples_train_the_pooled_loss_at_the_sampled_anchors():
    pool = build_pool(top_m=2, loss_weight=0.5, samples=True)
    feat = feature_map(requires_grad=True)
    samples = cell_boxes([(0, 0), (3, 1)]).requires_grad_()
    pooled = torch.zeros(2, 2, NUM_CLASSES)
    losses = pool.loss(pooled, LABELS, hand_head(), feat, (SIZE, SIZE), samples)
    assert set(losses) == {'loss_part_pool', 'loss_part_pool_samples'}
    sample_logits = torch.stack([hand_logits(cell_features([(0, 0), (3, 1)], image))
                                 for image in range(2)])
    expected = 0.5 * F.cross_entropy(sample_logits.flatten(0, 1), torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(losses['loss_part_pool_samples'], expected)
    losses['loss_part_pool_samples'].backward()
    assert feat.grad.abs().sum() > 0 and samples.grad is None
    # A step without samples has no such loss.
    assert set(pool.loss(pooled, LABELS, hand_head(), feat, (SIZE, SIZE))) == {
        'loss_part_pool'}


def test_object_pool_is_the_head_over_the_object_mask():
    pool = build_pool(boxes='object')
    # The mask on the stride-8 grid (8 x 8): image 0 covers cells (0, 0),
    # (0, 1), (1, 0), (1, 1) of the 4 x 4 map; image 1 cells (0, 0) and (0, 1).
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[0, 0, :4, :4] = True
    mask[1, 0, :2, :4] = True
    pooled = pool(hand_head(), feature_map(), (SIZE, SIZE), object_mask=mask)
    assert pooled.shape == (2, 1, NUM_CLASSES)
    # Image 0: features (0.5, 0.5, 1); image 1: (0, 0.5, 2).
    torch.testing.assert_close(pooled[:, 0], torch.tensor([[0.0, 0.5, 1.0, 0.0],
                                                           [-0.5, 0.5, 2.0, 0.0]]))
    with pytest.raises(ValueError, match=r"PooledPartHead\(boxes='object'\) needs the "
                       "location heatmap's object mask"):
        pool(hand_head(), feature_map(), (SIZE, SIZE), cell_boxes([(0, 0)]))


def test_proposal_sources_need_the_proposals():
    for boxes in ('proposals', 'random'):
        with pytest.raises(ValueError, match=rf"PooledPartHead\(boxes='{boxes}'\) needs "
                           r'the SPPN proposals \(sppn_head=None\)'):
            build_pool(boxes=boxes)(hand_head(), feature_map(), (SIZE, SIZE))


def test_ground_truth_pools_every_given_part():
    pool = build_pool(boxes='ground_truth', top_m=1, loss_weight=0.5)
    # Three parts per image, each exactly one cell: top_m=1 does not cut them.
    cells = [[(0, 1), (2, 3), (3, 3)], [(1, 1), (0, 0), (2, 0)]]
    samples = [DataSample().set_gt_label(label) for label in (0, 1)]
    for sample, image_cells in zip(samples, cells):
        sample.set_field(cell_boxes(image_cells)[0].numpy(), 'gt_bboxes')
    pooled = pool(hand_head(), feature_map(), (SIZE, SIZE), data_samples=samples)
    assert pooled.shape == (2, 3, NUM_CLASSES)
    expected = torch.stack([hand_logits(cell_features(image_cells, image))
                            for image, image_cells in enumerate(cells)])
    torch.testing.assert_close(pooled, expected)
    losses = pool.loss(pooled, LABELS, hand_head(), feature_map(), (SIZE, SIZE))
    torch.testing.assert_close(
        losses['loss_part_pool'],
        0.5 * F.cross_entropy(expected.flatten(0, 1), LABELS.repeat_interleave(3)))


def test_ground_truth_without_part_boxes_says_how_to_load_them():
    pool = build_pool(boxes='ground_truth')
    samples = [DataSample().set_gt_label(0), DataSample().set_gt_label(1)]
    with pytest.raises(ValueError, match=r"need gt_bboxes on every data sample: load them "
                       r'with SyntheticFGVC\(with_part_boxes=True\)'):
        pool(hand_head(), feature_map(), (SIZE, SIZE), data_samples=samples)
    with pytest.raises(ValueError, match='need gt_bboxes on every data sample'):
        pool(hand_head(), feature_map(), (SIZE, SIZE))
    samples[0].set_field(torch.zeros(3, 4), 'gt_bboxes')
    samples[1].set_field(torch.zeros(2, 4), 'gt_bboxes')
    with pytest.raises(ValueError, match=r'same P in every sample, got shapes '
                       r'\[\(2, 4\), \(3, 4\)\]'):
        pool(hand_head(), feature_map(), (SIZE, SIZE), data_samples=samples)


def test_random_boxes_keep_their_sizes_inside_the_image():
    torch.manual_seed(0)
    boxes = torch.tensor([[[2.0, 3.0, 12.0, 17.0], [50.0, 50.0, 64.0, 60.0]]]).repeat(200, 1, 1)
    moved = move_boxes_at_random(boxes, (64, 48))
    sizes = moved[..., 2:] - moved[..., :2]
    torch.testing.assert_close(sizes[:, 0], torch.tensor([10.0, 14.0]).expand(200, 2))
    torch.testing.assert_close(sizes[:, 1], torch.tensor([14.0, 10.0]).expand(200, 2))
    assert moved[..., 0].min() >= 0 and moved[..., 2].max() <= 48
    assert moved[..., 1].min() >= 0 and moved[..., 3].max() <= 64
    # Uniform positions: the left edges spread over most of their range.
    assert moved[:, 0, 0].max() - moved[:, 0, 0].min() > 30
    # A box wider than the image is clipped to it, at the left edge.
    wide = move_boxes_at_random(torch.tensor([[[-10.0, 0.0, 60.0, 8.0]]]), (64, 48))
    assert wide[0, 0, 0].item() == 0.0 and wide[0, 0, 2].item() == 48.0
    # A generator makes the draw repeatable.
    draws = [move_boxes_at_random(boxes[:2], (64, 48), torch.Generator().manual_seed(3))
             for _ in range(2)]
    torch.testing.assert_close(draws[0], draws[1])


def test_random_boxes_repeat_in_eval_mode_and_move_in_training():
    pool = build_pool(top_m=2, boxes='random').eval()
    proposals = cell_boxes([(1, 2), (3, 0), (0, 0)])
    feat = torch.randn(2, CHANNELS, 4, 4)
    first = pool(hand_head(), feat, (SIZE, SIZE), proposals)
    torch.rand(5)  # the global generator moves; the eval draw does not
    again = pool(hand_head(), feat, (SIZE, SIZE), proposals)
    torch.testing.assert_close(first, again)
    assert first.shape == (2, 2, NUM_CLASSES)
    pool.train()
    trained = [pool(hand_head(), feat, (SIZE, SIZE), proposals) for _ in range(2)]
    # In training every step draws new positions.
    assert not torch.allclose(trained[0], trained[1])


@pytest.mark.parametrize('cfg, sources, message', [
    (dict(boxes='proposals'), (False, True, 8), "boxes='proposals' (samples=False) needs the SPPN"),
    (dict(boxes='random'), (False, True, 8), "boxes='random' (samples=False) needs the SPPN"),
    (dict(boxes='object', samples=True), (False, True, 8), 'needs the SPPN'),
    (dict(boxes='object'), (True, False, 8), 'location_heatmap is None'),
    (dict(boxes='proposals', samples=True), (True, True, 0), 'sppn_head.rank_samples > 0'),
])
def test_check_sources_names_what_the_box_source_lacks(cfg, sources, message):
    head = MODELS.build(dict(type='PooledPartHead', **cfg))
    with pytest.raises(ValueError, match=re.escape(message)):
        head.check_sources(*sources)


@pytest.mark.parametrize('cfg, sources', [
    (dict(boxes='object'), (False, True, 0)),
    (dict(boxes='ground_truth'), (False, False, 0)),
    (dict(boxes='proposals', samples=True), (True, False, 8)),
])
def test_check_sources_accepts_what_each_box_source_needs(cfg, sources):
    MODELS.build(dict(type='PooledPartHead', **cfg)).check_sources(*sources)
