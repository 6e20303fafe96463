"""PartDiscoveryHead: boxes from known part maps, its losses, and its place in
DAFClassifier as the SPPN's replacement."""
import copy

import pytest
import torch
from conftest import config_path, drop_synthetic_pretrained
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from mmdaf.models.dense_heads.part_discovery_head import PartDiscoveryHead
from mmdaf.models.losses.part_priors import (
    concentration_loss,
    orthogonality_loss,
    presence_loss,
)

NUM_CLASSES = 4


def head(**kwargs) -> PartDiscoveryHead:
    torch.manual_seed(0)
    cfg = dict(in_channels=8, num_classes=NUM_CLASSES, num_parts=2, feat_channels=8,
               box_size=10)
    cfg.update(kwargs)
    return PartDiscoveryHead(**cfg)


def test_registered_in_mmdet():
    built = MMDET_MODELS.build(dict(_scope_='mmdet', type='PartDiscoveryHead', in_channels=8,
                                    num_classes=3))
    assert isinstance(built, PartDiscoveryHead)
    assert built.learns_from_labels and built.rank_samples == 0
    assert not built.samples_this_step() and not built.ranks(with_samples=True)


def test_forward_shapes_and_maps_sum_to_one():
    part_maps = head()([torch.randn(3, 8, 5, 6)])
    assert part_maps.maps.shape == (3, 3, 5, 6)
    assert part_maps.features.shape == (3, 2, 8)
    assert torch.allclose(part_maps.maps.sum(dim=1), torch.ones(3, 5, 6), atol=1e-5)


def test_boxes_are_centred_on_each_part_and_ordered_by_peak():
    # 4 x 4 map of a 64 px image: 16 px cells. Part 0 at cell (0, 3) with
    # peak 0.6, part 1 at cell (2, 1) with peak 0.9.
    maps = torch.zeros(1, 3, 4, 4)
    maps[0, 2] = 1.0
    maps[0, 0, 0, 3], maps[0, 2, 0, 3] = 0.6, 0.4
    maps[0, 1, 2, 1], maps[0, 2, 2, 1] = 0.9, 0.1
    boxes, scores = head(box_size=10).boxes_from_maps(maps, (64, 64))
    assert boxes.shape == (1, 2, 4) and scores.shape == (1, 2)
    # Part 1 first: centre (x, y) = (24, 40); part 0: (56, 8), clipped at 64.
    assert torch.allclose(boxes[0, 0], torch.tensor([19.0, 35.0, 29.0, 45.0]), atol=1e-3)
    assert torch.allclose(boxes[0, 1], torch.tensor([51.0, 3.0, 61.0, 13.0]), atol=1e-3)
    assert torch.allclose(scores[0], torch.tensor([0.9, 0.6]))


def test_boxes_are_clipped_to_the_image():
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, 0, 0] = 1.0
    maps[0, 1] = 1 - maps[0, 0]
    boxes, _ = head(num_parts=1, box_size=40).boxes_from_maps(maps, (32, 32))
    # Centre (8, 8): the 40 px square is cut at the image's edges.
    assert torch.allclose(boxes[0, 0], torch.tensor([0.0, 0.0, 28.0, 28.0]), atol=1e-3)


def test_propose_gives_num_parts_boxes_per_image():
    boxes, scores = head(num_parts=3).propose([torch.randn(2, 8, 8, 8)], (64, 64))
    assert boxes.shape == (2, 3, 4) and scores.shape == (2, 3)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    widths = boxes[..., 2] - boxes[..., 0]
    assert (widths <= 10 + 1e-4).all() and (widths > 0).all()


def test_loss_is_the_weighted_cross_entropy_and_priors():
    model = head(part_dropout=0.0, loss_weights=dict(concentration=2.0, presence=0.5))
    feats = [torch.randn(3, 8, 4, 4)]
    labels = torch.tensor([0, 1, 3])
    losses = model.loss_by_labels(feats, labels)
    part_maps = model(feats)
    logits = model.classifier(part_maps.features.flatten(1))
    expected_ce = torch.nn.functional.cross_entropy(logits, labels)
    assert losses['loss_part_cls'].item() == pytest.approx(expected_ce.item(), rel=1e-5)
    assert losses['loss_concentration'].item() == pytest.approx(
        2.0 * concentration_loss(part_maps.maps).item(), rel=1e-5)
    assert losses['loss_orthogonality'].item() == pytest.approx(
        orthogonality_loss(part_maps.features).item(), rel=1e-5)
    assert losses['loss_presence'].item() == pytest.approx(
        0.5 * presence_loss(part_maps.maps).item(), rel=1e-5)
    expected_accuracy = (logits.argmax(1) == labels).float().mean().item() * 100
    assert losses['part_cls_accuracy'].item() == pytest.approx(expected_accuracy)


def test_the_tower_is_1x1():
    assert all(conv.kernel_size == (1, 1) and conv.padding == (0, 0)
               for conv in head().tower if isinstance(conv, torch.nn.Conv2d))


def test_a_1x1_tower_makes_the_maps_follow_the_content_not_the_position():
    # The same cell content moved by two cells moves the part maps with it.
    model = head().eval()
    feats = torch.zeros(1, 8, 6, 6)
    feats[0, :, 1, 1] = torch.randn(8)
    shifted = torch.roll(feats, shifts=(2, 2), dims=(2, 3))
    maps = model([feats]).maps
    assert torch.allclose(torch.roll(maps, shifts=(2, 2), dims=(2, 3)),
                          model([shifted]).maps, atol=1e-6)


def test_part_dropout_drops_whole_parts_in_training_only():
    model = head(part_dropout=0.5)
    features = torch.ones(64, 2, 8)
    model.eval()
    assert torch.equal(model.classify_parts(features),
                       model.classifier(features.flatten(1)))
    model.train()
    torch.manual_seed(1)
    logits = model.classify_parts(features)
    bias = model.classifier.bias
    # Some image lost both parts: its logits are the bias alone.
    assert any(torch.allclose(row, bias) for row in logits)


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_parts=0), 'num_parts must be >= 1'),
    (dict(box_size=0), 'box_size must be > 0'),
    (dict(part_dropout=1.0), r'part_dropout must be in \[0, 1\)'),
    (dict(stacked_convs=0), 'stacked_convs must be >= 1'),
    (dict(loss_weights=dict(rank=1.0)), r"unknown loss_weights keys \['rank'\]"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        head(**kwargs)


def discovery_daf_cfg() -> dict:
    cfg = Config.fromfile(config_path('daf_r18_part-discovery_synthetic.py'))
    init_default_scope('mmpretrain')
    model = copy.deepcopy(cfg.model)
    drop_synthetic_pretrained(model)
    model.head.num_classes = NUM_CLASSES
    model.sppn_head.num_classes = NUM_CLASSES
    model.teacher.head.num_classes = NUM_CLASSES
    model.fusion_head.num_classes = NUM_CLASSES
    model.data_preprocessor = dict(num_classes=NUM_CLASSES)
    return model


def test_daf_classifier_trains_and_predicts_with_part_discovery():
    torch.manual_seed(0)
    model = MODELS.build(discovery_daf_cfg())
    assert isinstance(model.sppn_head, PartDiscoveryHead)
    inputs = torch.randn(2, 3, 64, 64)
    samples = [DataSample().set_gt_label(i) for i in range(2)]
    model.train()
    losses = model.loss(inputs, samples)
    assert {'loss_part_cls', 'loss_concentration', 'loss_orthogonality',
            'loss_presence'} <= set(losses)
    assert not {'loss_rank', 'loss_overlap', 'loss_area'} & set(losses)
    # The part losses train the head, never the student backbone (detached).
    model.zero_grad()
    losses['loss_part_cls'].backward()
    assert model.sppn_head.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0
               for p in model.backbone.parameters())
    model.eval()
    with torch.no_grad():
        predictions = model.predict(inputs, samples)
    assert predictions[0].part_boxes.shape == (4, 4)
    side = predictions[0].part_boxes[:, 2] - predictions[0].part_boxes[:, 0]
    assert (side <= 14 + 1e-4).all()
