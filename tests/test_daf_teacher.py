"""DAFTeacher alone, built from a config dict (an eighth-width ResNet-18 on
the 5-channel input, the PAF bilinear neck, a linear head), on 64 px inputs
with hand-made heatmaps and boxes."""
from unittest.mock import patch

import pytest
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import mmdaf  # noqa: F401  (registers DAFTeacher)
from mmdaf.models.heads.daf_teacher import DAFTeacher, TeacherOutput

NUM_CLASSES = 4
SIZE = 64


def teacher_cfg(attention: bool = True, use_attention=None, **overrides) -> dict:
    """C4 of 32 and C5 of 64 channels at stride 16 (4 x 4 at 64 px); the
    neck's output 16**2 / 4 = 64."""
    use_attention = attention if use_attention is None else use_attention
    cfg = dict(
        type='DAFTeacher',
        backbone=dict(type='ExpandedInputResNet', depth=18, in_channels=5, stem_channels=8,
                      base_channels=8, out_indices=(2, 3), strides=(1, 2, 2, 1),
                      dilations=(1, 1, 1, 2)),
        neck=dict(type='PAFBilinearNeck', in_channels=64, reduced_channels=16, num_groups=4,
                  use_attention=use_attention),
        head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=64),
        attention=attention)
    cfg.update(overrides)
    return cfg


def build_teacher(**kwargs) -> DAFTeacher:
    torch.manual_seed(0)
    teacher = MODELS.build(teacher_cfg(**kwargs))
    teacher.eval()  # running BatchNorm statistics: one image gives the same logits alone
    return teacher


def images(batch_size: int = 2) -> torch.Tensor:
    return torch.randn(batch_size, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def data_samples(labels=(0, 1)):
    return [DataSample().set_gt_label(label) for label in labels]


def test_builds_from_a_config_dict():
    teacher = build_teacher()
    assert isinstance(teacher, DAFTeacher)
    assert teacher.attention and teacher.mask_boxes == 'proposals'
    assert teacher.backbone.in_channels == 5
    assert teacher.neck.use_attention


def test_input_has_heatmap_and_box_mask_channels():
    teacher = build_teacher()
    inputs = images()
    # Heatmap on the stride-8 grid (8 x 8): image 0 a ramp along x, column j
    # is j / 7; image 1 a constant 0.25.
    heatmap = torch.zeros(2, 1, 8, 8)
    heatmap[0, 0] = torch.arange(8.0) / 7
    heatmap[1, 0] = 0.25
    # Pixel (y, x) is in box (x1, y1, x2, y2) when (x + 0.5, y + 0.5) lies in
    # [x1, x2) x [y1, y2); the last box of image 1 has no area.
    boxes = torch.tensor([[[8.4, 16.0, 24.6, 40.0], [40.0, 40.0, 48.0, 44.0]],
                          [[0.0, 0.0, 64.0, 8.0], [30.0, 30.0, 30.0, 50.0]]])
    teacher_input, saliency = teacher.build_input(inputs, heatmap, boxes)
    assert teacher_input.shape == (2, 5, SIZE, SIZE)
    assert torch.equal(teacher_input[:, :3], inputs)

    # Bilinear upsampling x8 (align_corners=False): output column x reads the
    # input at (x + 0.5) / 8 - 0.5, clamped to [0, 7]; on a ramp that is the
    # position / 7.
    positions = ((torch.arange(SIZE) + 0.5) / 8 - 0.5).clamp(0, 7)
    expected_heat = torch.empty(2, SIZE, SIZE)
    expected_heat[0] = (positions / 7).expand(SIZE, SIZE)
    expected_heat[1] = 0.25
    assert torch.allclose(teacher_input[:, 3], expected_heat, atol=1e-6)

    expected_mask = torch.zeros(2, SIZE, SIZE)
    expected_mask[0, 16:40, 8:25] = 1  # x: 8.5 >= 8.4 and 24.5 < 24.6
    expected_mask[0, 40:44, 40:48] = 1
    expected_mask[1, 0:8, :] = 1
    assert torch.equal(teacher_input[:, 4], expected_mask)
    assert torch.equal(saliency, expected_mask[:, None])

    # Without the location heatmap or without SPPN the channel is all ones.
    teacher_input, saliency = teacher.build_input(inputs, None, None)
    assert torch.equal(teacher_input[:, 3:], torch.ones(2, 2, SIZE, SIZE))
    assert torch.equal(saliency, torch.ones(2, 1, SIZE, SIZE))


def test_input_is_detached_from_the_heatmap_and_the_boxes():
    teacher = build_teacher()
    heatmap = torch.rand(2, 1, 8, 8, requires_grad=True)
    boxes = torch.tensor([[[0.0, 0.0, 32.0, 32.0]], [[8.0, 8.0, 16.0, 16.0]]],
                         requires_grad=True)
    teacher_input, saliency = teacher.build_input(images(), heatmap, boxes)
    assert not teacher_input.requires_grad and not saliency.requires_grad


def test_without_attention_the_teacher_sees_the_image_and_zeros():
    teacher = build_teacher(attention=False)
    assert not teacher.attention and not teacher.neck.use_attention
    assert not hasattr(teacher.neck, 'attention')
    inputs = images()
    heatmap = torch.full((2, 1, 8, 8), 0.5)
    boxes = torch.tensor([[[0.0, 0.0, 32.0, 32.0]], [[8.0, 8.0, 16.0, 16.0]]])
    teacher_input, saliency = teacher.build_input(inputs, heatmap, boxes)
    assert teacher_input.shape == (2, 5, SIZE, SIZE)
    assert torch.equal(teacher_input[:, :3], inputs)
    assert torch.equal(teacher_input[:, 3:], torch.zeros(2, 2, SIZE, SIZE))
    assert saliency is None
    # It still trains without them.
    teacher.train()
    _, losses = teacher.loss(teacher_input, saliency, data_samples())
    assert torch.isfinite(losses['loss_teacher']) and torch.isfinite(losses['loss_group'])
    losses['loss_teacher'].backward()
    assert teacher.backbone.conv1.weight.grad.abs().sum() > 0


def test_without_attention_the_neck_must_drop_its_filter():
    with pytest.raises(ValueError, match=r'DAFTeacher: attention=False gives the neck no '
                       r'saliency mask; set neck.use_attention=False as well'):
        build_teacher(attention=False, use_attention=True)


def test_ground_truth_mask_is_the_union_of_the_given_regions():
    teacher = build_teacher(mask_boxes='ground_truth')
    inputs = images()
    samples = data_samples()
    regions = [torch.tensor([[0.0, 0.0, 8.0, 8.0], [40.0, 40.0, 48.0, 56.0]]),
               torch.tensor([[16.0, 8.0, 32.0, 16.0], [16.0, 8.0, 32.0, 16.0]])]
    for sample, image_regions in zip(samples, regions):
        sample.set_field(image_regions, 'gt_bboxes')
    heatmap = torch.full((2, 1, 8, 8), 0.5)
    proposals = torch.tensor([[[24.0, 24.0, 40.0, 40.0]]] * 2)
    teacher_in, saliency = teacher.build_input(inputs, heatmap, proposals, samples)
    assert saliency.shape == (2, 1, SIZE, SIZE)
    # 64 + 128 pixels in image 0's two regions; image 1's region twice, 128.
    assert saliency[0].sum().item() == 64 + 128 and saliency[1].sum().item() == 128
    assert saliency[0, 0, 4, 4] == 1 and saliency[0, 0, 50, 44] == 1
    assert saliency[0, 0, 20, 20] == 0 and saliency[1, 0, 10, 20] == 1
    assert saliency[0, 0, 30, 30] == 0  # inside the proposal, not a region
    torch.testing.assert_close(teacher_in[:, 4:], saliency)
    torch.testing.assert_close(teacher_in[:, 3], torch.full((2, SIZE, SIZE), 0.5))
    # The proposals no longer reach the teacher: the same input whatever they are.
    other, _ = teacher.build_input(inputs, heatmap, proposals + 16, samples)
    assert torch.equal(other, teacher_in)
    with pytest.raises(ValueError, match='need gt_bboxes on every data sample'):
        teacher.build_input(inputs, heatmap, proposals, data_samples())


@pytest.mark.parametrize('cfg, message', [
    (dict(mask_boxes='gt'), "DAFTeacher: mask_boxes must be one of .* got 'gt'"),
    (dict(mask_boxes='ground_truth', attention=False),
     "DAFTeacher: mask_boxes='ground_truth' needs attention=True"),
])
def test_mask_boxes_errors_name_the_value(cfg, message):
    with pytest.raises(ValueError, match=message):
        build_teacher(**cfg)


def test_forward_returns_stages_logits_and_the_grouping_loss():
    teacher = build_teacher()
    teacher_input, saliency = teacher.build_input(images(), None, None)
    with torch.no_grad():
        output = teacher(teacher_input, saliency)
    assert isinstance(output, TeacherOutput)
    assert [tuple(feat.shape) for feat in output.feats] == [(2, 32, 4, 4), (2, 64, 4, 4)]
    assert output.logits.shape == (2, NUM_CLASSES)
    assert output.grouping_loss.dim() == 0 and torch.isfinite(output.grouping_loss)


def test_prediction_skips_the_grouping_loss():
    teacher = build_teacher()
    boxes = torch.tensor([[[0.0, 0.0, 32.0, 32.0]], [[8.0, 8.0, 40.0, 40.0]]])
    teacher_input, saliency = teacher.build_input(images(), torch.rand(2, 1, 8, 8), boxes)
    neck = teacher.neck
    with torch.no_grad():
        full = teacher(teacher_input, saliency)
        with patch.object(neck, 'grouping_loss', wraps=neck.grouping_loss) as loss:
            light = teacher(teacher_input, saliency, with_grouping_loss=False)
    assert loss.call_count == 0
    assert full.grouping_loss is not None and light.grouping_loss is None
    assert torch.equal(light.logits, full.logits)
    assert all(torch.equal(a, b) for a, b in zip(light.feats, full.feats))


def test_loss_is_the_head_cross_entropy_and_the_grouping_loss_unweighted():
    teacher = build_teacher()
    teacher_input, saliency = teacher.build_input(images(), None, None)
    output, losses = teacher.loss(teacher_input, saliency, data_samples((3, 1)))
    assert set(losses) == {'loss_teacher', 'loss_group'}
    torch.testing.assert_close(losses['loss_teacher'],
                               F.cross_entropy(output.logits, torch.tensor([3, 1])))
    assert losses['loss_group'] is output.grouping_loss


def test_saliency_mask_changes_the_logits_through_the_neck_only():
    teacher = build_teacher()
    # As after loading 3-channel ImageNet weights: the backbone does not look
    # at the heatmap and mask channels, so only the PAF neck can.
    with torch.no_grad():
        teacher.backbone.conv1.weight[:, 3:] = 0
    inputs = images()

    def logits(box: list) -> torch.Tensor:
        boxes = torch.tensor(box).expand(2, 4, 4).clone()
        with torch.no_grad():
            return teacher(*teacher.build_input(inputs, None, boxes)).logits

    top_left = logits([0.0, 0.0, 32.0, 32.0])
    bottom_right = logits([32.0, 32.0, 64.0, 64.0])
    assert (top_left - bottom_right).abs().max() > 1e-4
    # the same two masks with the part attention filter switched off
    teacher.neck.use_attention = False
    assert torch.allclose(logits([0.0, 0.0, 32.0, 32.0]),
                          logits([32.0, 32.0, 64.0, 64.0]), atol=1e-6)
