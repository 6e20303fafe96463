"""The switches added for the student's gain, each on hand-made inputs: the
distillation gate (per-sample weights of both distillation losses), the
teacher without attention inputs, and part images zoomed on their box."""
import math

import pytest
import torch
from test_daf_classifier import batch, build, hand_student_output, tiny_daf_cfg

from mmdaf.models.classifiers.daf_classifier import distill_gate
from mmdaf.models.losses import HintLoss, SoftTargetLoss
from mmdaf.models.utils.part_images import PartImageGenerator, zoom_on_boxes

SIZE = 64


# ----------------------------------------------------------------- weighted losses
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


# ----------------------------------------------------------------------- gate
def test_distill_gate_keeps_the_samples_the_teacher_gets_right_or_better():
    labels = torch.tensor([0, 1, 2])
    teacher = torch.tensor([[2.0, 0.0, 0.0],    # right, p(y) = 0.79
                            [2.0, 1.0, 0.0],    # wrong, p(y) = 0.24
                            [0.0, 0.0, 0.1]])   # right, barely: p(y) = 0.36
    student = torch.tensor([[0.0, 0.0, 5.0],    # p(y) = 0.007
                            [0.0, 0.0, 0.0],    # p(y) = 0.33
                            [0.0, 0.0, 3.0]])   # p(y) = 0.91
    assert distill_gate(student, teacher, labels, 'all').tolist() == [1, 1, 1]
    assert distill_gate(student, teacher, labels, 'teacher_correct').tolist() == [1, 0, 1]
    assert distill_gate(student, teacher, labels, 'teacher_better').tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="distill gate must be one of"):
        distill_gate(student, teacher, labels, 'confident')


def model_with_a_wrong_teacher(gate: str):
    """A model distilled with ``gate`` whose teacher is wrong on every image
    of :func:`batch` (its logits are its head's bias: class 2, while the
    labels are 0 and 1), after one loss step that distils nothing."""
    model = build(distill=dict(student_channels=128, teacher_channels=128, gate=gate))
    with torch.no_grad():
        model.teacher.head.fc.weight.zero_()
        model.teacher.head.fc.bias.copy_(torch.tensor([-10.0, -10.0, 10.0, -10.0]))
    losses = model(**batch(), mode='loss')
    assert losses['distill_kept'].item() == 0.0
    assert losses['loss_soft'].item() == 0.0 and losses['loss_hint'].item() == 0.0
    return model


def test_gated_distillation_losses_act_only_on_kept_samples():
    model = model_with_a_wrong_teacher('teacher_correct')
    data = batch()
    # The same teacher always right for image 0 (label 0) keeps half the batch.
    with torch.no_grad():
        model.teacher.head.fc.bias.copy_(torch.tensor([10.0, -10.0, -10.0, -10.0]))
    losses = model(**data, mode='loss')
    assert losses['distill_kept'].item() == 0.5
    assert losses['loss_soft'].item() > 0 and losses['loss_hint'].item() > 0


def test_teacher_ahead_gate_follows_the_running_means_of_the_true_class_probability():
    model = build(distill=dict(student_channels=128, teacher_channels=128,
                               gate='teacher_ahead', gate_momentum=0.5))
    labels = torch.tensor([0, 1])
    # p(y) = 0.5 on both images when two logits tie at log 1 = 0 and the
    # rest are -inf-like; 1.0 when the label's logit alone is high.
    sure = torch.tensor([[20.0, -20.0], [-20.0, 20.0]])      # p(y) ~ 1
    unsure = torch.tensor([[0.0, 0.0], [0.0, 0.0]])           # p(y) = 0.5
    wrong = torch.tensor([[-20.0, 20.0], [20.0, -20.0]])     # p(y) ~ 0
    # Step 1: teacher 1.0, student 0.5 -> means (0.5, 0.25): the teacher is ahead.
    gate = model.teacher_ahead_gate(unsure, sure, labels)
    assert gate.tolist() == [1.0, 1.0]
    assert model.distill_true_prob.tolist() == pytest.approx([0.5, 0.25], abs=1e-6)
    # Step 2: teacher 0, student 1 -> (0.25, 0.625): behind, nothing distilled.
    gate = model.teacher_ahead_gate(sure, wrong, labels)
    assert gate.tolist() == [0.0, 0.0]
    assert model.distill_true_prob.tolist() == pytest.approx([0.25, 0.625], abs=1e-6)
    # Step 3: teacher 1, student 0 -> (0.625, 0.3125): ahead again.
    assert model.teacher_ahead_gate(wrong, sure, labels).tolist() == [1.0, 1.0]
    # The means are a buffer: saved with the model, so a resumed run gates alike.
    assert 'distill_true_prob' in model.state_dict()
    with pytest.raises(ValueError, match="applied by DAFClassifier.teacher_ahead_gate"):
        distill_gate(unsure, sure, labels, 'teacher_ahead')


def test_teacher_ahead_gate_distils_nothing_from_a_teacher_behind_the_student():
    model = model_with_a_wrong_teacher('teacher_ahead')
    data = batch()
    teacher_mean, student_mean = model.distill_true_prob.tolist()
    assert teacher_mean < 1e-8 < student_mean
    # A teacher giving both labels p = 0.5, after running means of (0.1, 0):
    # (0.09 + 0.05, 0.1 * p_student) with p_student <= 1, so it is ahead.
    with torch.no_grad():
        model.teacher.head.fc.bias.copy_(torch.tensor([0.0, 0.0, -20.0, -20.0]))
        model.distill_true_prob.copy_(torch.tensor([0.1, 0.0]))
    losses = model(**data, mode='loss')
    assert losses['distill_kept'].item() == 1.0
    assert losses['loss_soft'].item() > 0 and losses['loss_hint'].item() > 0


def test_distill_gate_momentum_must_be_a_fraction():
    with pytest.raises(ValueError, match=r'distill.gate_momentum must be in \[0, 1\), got 1.0'):
        build(distill=dict(student_channels=128, teacher_channels=128,
                           gate='teacher_ahead', gate_momentum=1.0))


def test_unknown_distill_gate_is_rejected():
    with pytest.raises(ValueError, match="distill.gate must be one of"):
        build(distill=dict(student_channels=128, teacher_channels=128, gate='sometimes'))


# ---------------------------------------------------------- teacher attention
def no_attention_teacher() -> dict:
    teacher = tiny_daf_cfg().teacher
    teacher.neck.use_attention = False
    return teacher


def test_teacher_without_attention_sees_the_image_and_zeros():
    model = build(teacher_attention=False, teacher=no_attention_teacher()).eval()
    assert not hasattr(model.teacher.neck, 'attention')
    inputs = batch()['inputs']
    heatmap = torch.full((2, 1, 8, 8), 0.5)
    boxes = torch.tensor([[[0.0, 0.0, 32.0, 32.0]], [[8.0, 8.0, 16.0, 16.0]]])
    teacher_input, saliency = model.teacher_input(inputs,
                                                  hand_student_output(heatmap, boxes))
    assert teacher_input.shape == (2, 5, SIZE, SIZE)
    assert torch.equal(teacher_input[:, :3], inputs)
    assert torch.equal(teacher_input[:, 3:], torch.zeros(2, 2, SIZE, SIZE))
    assert saliency is None
    # The whole model still trains and predicts without them.
    losses = model.train()(**batch(), mode='loss')
    assert torch.isfinite(losses['loss_teacher'])


def test_teacher_without_attention_needs_a_neck_without_the_filter():
    with pytest.raises(ValueError, match='set teacher.neck.use_attention=False'):
        build(teacher_attention=False)


# ----------------------------------------------------------------------- zoom
def test_zoom_on_a_box_resamples_it_to_the_full_image():
    # Pixel value = its column index; box [2, 4) x [2, 4), side 2, context 1.
    imgs = torch.arange(8.0).expand(1, 1, 8, 8).contiguous()
    zoomed = zoom_on_boxes(imgs, torch.tensor([[[2.0, 2.0, 4.0, 4.0]]]), context=1.0)
    # Output column j has its centre at u = (2j + 1) / 8 - 1 in [-1, 1], which
    # reads input x = 3 + u pixels, i.e. column index 2.5 + u (bilinear).
    expected = 2.5 + (2 * torch.arange(8.0) + 1) / 8 - 1
    torch.testing.assert_close(zoomed[0, 0], expected.expand(8, 8))


def test_zoom_with_the_whole_image_as_box_is_the_identity():
    imgs = torch.randn(2, 3, 16, 16)
    # An 8 px box in the middle with context 2: the window is the image.
    boxes = torch.tensor([[[4.0, 4.0, 12.0, 12.0]], [[4.0, 4.0, 12.0, 12.0]]])
    zoomed = zoom_on_boxes(imgs, boxes, context=2.0)
    torch.testing.assert_close(zoomed, imgs, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match='part_imgs has 1 images, boxes 1 x 2'):
        zoom_on_boxes(imgs[:1], boxes.view(1, 2, 4), context=1.0)


def test_part_image_generator_zooms_after_composing():
    imgs = torch.randn(1, 3, SIZE, SIZE)
    boxes = torch.tensor([[[16.0, 16.0, 32.0, 32.0], [40.0, 40.0, 48.0, 48.0]]])
    plain = PartImageGenerator(blur_sigma_ratio=1 / 20, noise_std=0.0)
    zoomed = PartImageGenerator(blur_sigma_ratio=1 / 20, noise_std=0.0, zoom_context=1.0)
    parts = zoomed(imgs, boxes)
    assert parts.shape == (2, 3, SIZE, SIZE)
    torch.testing.assert_close(parts, zoom_on_boxes(plain(imgs, boxes), boxes, 1.0))
    # Part 0 shows its 16 px box at 4x, sharp: away from the box's edge
    # (where bilinear sampling reads the blurred pixel outside) it is the zoom
    # of the image itself.
    inner = (slice(None), slice(None), slice(4, 60), slice(4, 60))
    torch.testing.assert_close(parts[:1][inner],
                               zoom_on_boxes(imgs, boxes[:, :1], 1.0)[inner])
    with pytest.raises(ValueError, match='zoom_context must be >= 0'):
        PartImageGenerator(zoom_context=-1)


# ---------------------------------------------------- part pass gradient scale
def test_scale_gradient_keeps_values_and_scales_the_gradient():
    from mmdaf.models.utils import scale_gradient
    values = torch.tensor([1.0, -2.0], requires_grad=True)
    scaled = scale_gradient(values, 0.25)
    assert torch.equal(scaled, values.detach())
    (3 * scaled).sum().backward()
    assert values.grad.tolist() == [0.75, 0.75]
    assert not scale_gradient(values, 0).requires_grad
    assert scale_gradient(values, 1) is values
    with pytest.raises(ValueError, match='scale must be >= 0, got -1'):
        scale_gradient(values, -1)


def _loss_con_grads(scale: float):
    model = build(teacher=None, distill=None, fusion_head=None,
                  part_backbone_grad_scale=scale,
                  loss_concentrate=dict(type='ConcentrateLoss', top_m=3))
    torch.manual_seed(1)  # the same part image noise for every scale
    losses = model(**batch(), mode='loss')
    losses['loss_con'].backward()
    backbone_grad = model.backbone.conv1.weight.grad
    backbone_grad = torch.zeros_like(model.backbone.conv1.weight) \
        if backbone_grad is None else backbone_grad
    return backbone_grad, model.head.fc.weight.grad


def test_part_backbone_grad_scale_scales_loss_con_in_the_backbone_only():
    backbone_full, head_full = _loss_con_grads(1.0)
    backbone_half, head_half = _loss_con_grads(0.5)
    backbone_none, head_none = _loss_con_grads(0.0)
    assert backbone_full.abs().sum() > 0
    torch.testing.assert_close(backbone_half, 0.5 * backbone_full)
    assert torch.count_nonzero(backbone_none) == 0
    # The head learns from the part images at full strength whatever the scale.
    torch.testing.assert_close(head_half, head_full)
    torch.testing.assert_close(head_none, head_full)


def test_part_backbone_grad_scale_outside_0_1_is_refused():
    with pytest.raises(ValueError, match=r'part_backbone_grad_scale must be in \[0, 1\], '
                                         'got 1.5'):
        build(part_backbone_grad_scale=1.5)


def test_soft_part_images_with_no_backbone_gradient_are_refused():
    with pytest.raises(ValueError, match='part_images.soft_edge > 0 makes the part images '
                                         'differentiable in the boxes'):
        build(part_images=dict(type='PartImageGenerator', soft_edge=1.0),
              part_backbone_grad_scale=0.0)
