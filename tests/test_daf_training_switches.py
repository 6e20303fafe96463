"""The training-dynamics switches of DAFClassifier, each on hand-made inputs:
part BatchNorm modes, the part-loss warm-up, the SPPN input detach, the
student's part-logit prediction, differentiable part images and fixed anchors."""
import copy

import pytest
import torch
import torch.nn as nn
from mmpretrain.registry import HOOKS, MODELS
from mmpretrain.structures import DataSample
from test_daf_classifier import tiny_daf_cfg

from mmdaf.models.utils.batch_norm_stats import (
    channel_mean_and_variance,
    normalise_with_fixed_stats,
    record_batch_norm_stats,
    without_activation_checkpointing,
)

NUM_CLASSES = 4
SIZE = 64


def student_cfg(**overrides) -> dict:
    """The synthetic R18 student (SPPN + LHM, no teacher) for 64 px inputs,
    with the concentrate loss, so that the step runs the part pass these
    switches act on (the synthetic config itself has none)."""
    defaults = dict(teacher=None, distill=None, fusion_head=None,
                    loss_concentrate=dict(type='ConcentrateLoss', top_m=3))
    return tiny_daf_cfg(**dict(defaults, **overrides))


def build(**overrides):
    torch.manual_seed(0)
    model = MODELS.build(student_cfg(**overrides))
    model.init_weights()
    return model


def batch(batch_size: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return dict(
        inputs=torch.randn(batch_size, 3, SIZE, SIZE, generator=generator) * 2 + 1,
        data_samples=[DataSample().set_gt_label(i % NUM_CLASSES) for i in range(batch_size)])


def running_stats(module: nn.Module) -> dict:
    return {name: buf.clone() for name, buf in module.named_buffers()
            if 'running' in name}


# --------------------------------------------------------------------------- BN
def stats_after_step_and_clean_pass(part_bn: str):
    """Running statistics of the student after one DAF training step, and
    those of one train-mode pass of the same backbone on the clean batch."""
    model = build(part_bn=part_bn)
    reference = copy.deepcopy(model.backbone)
    reference.train()  # mmpretrain ResNet.train returns None
    data = batch()
    model.train()
    model(**data, mode='loss')
    with torch.no_grad():
        reference(data['inputs'])
    return running_stats(model.backbone), running_stats(reference)


@pytest.mark.parametrize('mode', ['clean', 'running'])
def test_part_pass_leaves_running_stats_to_the_clean_batch(mode):
    after, expected = stats_after_step_and_clean_pass(mode)
    assert after.keys() == expected.keys() and len(after) == 40  # R18: 20 BN layers
    for name in after:
        torch.testing.assert_close(after[name], expected[name], msg=name)


def test_shared_mode_mixes_part_images_into_running_stats():
    after, clean_only = stats_after_step_and_clean_pass('shared')
    name = 'bn1.running_mean'
    assert not torch.allclose(after[name], clean_only[name])


def test_clean_mode_normalises_part_images_with_clean_batch_stats():
    bn = nn.BatchNorm2d(3).train()
    clean = torch.randn(4, 3, 5, 5) * 3 + 2
    parts = torch.randn(8, 3, 5, 5)
    with record_batch_norm_stats(bn) as stats:
        bn(clean)
    mean = clean.mean(dim=(0, 2, 3))
    var = clean.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(stats[''][0], mean)
    torch.testing.assert_close(stats[''][1], var)
    running_before = bn.running_mean.clone()
    with normalise_with_fixed_stats(bn, stats):
        out = bn(parts)
    expected = (parts - mean[None, :, None, None]) / torch.sqrt(
        var[None, :, None, None] + bn.eps)
    torch.testing.assert_close(out, expected)
    # Restored: train mode, the same running buffers, untouched by the part pass.
    assert bn.training
    torch.testing.assert_close(bn.running_mean, running_before)


def test_channel_mean_and_variance_by_hand_and_with_a_large_mean():
    # Channel 0 holds 1, 2, 3, 4 (mean 2.5, variance 1.25), channel 1 all 7.
    feat = torch.tensor([[[[1., 2.]], [[7., 7.]]], [[[3., 4.]], [[7., 7.]]]])
    mean, var = channel_mean_and_variance(feat)
    assert mean.shape == (2, ) and var.dtype == torch.float32
    assert torch.equal(mean, torch.tensor([2.5, 7.0]))
    assert torch.equal(var, torch.tensor([1.25, 0.0]))
    # A mean of 1e4 against a spread of 1: E[x^2] - E[x]^2 would lose the
    # variance in float32, the two passes keep it.
    wide = torch.randn(4, 3, 6, 6, dtype=torch.float64) + 1e4
    mean, var = channel_mean_and_variance(wide.float())
    torch.testing.assert_close(var.double(), wide.var(dim=(0, 2, 3), unbiased=False),
                               rtol=1e-3, atol=0)


def test_part_pass_turns_activation_checkpointing_off_and_back_on():
    model = build(part_bn='clean', backbone=dict(student_cfg().backbone, with_cp=True))
    # Whichever modules do the checkpointing (the student's layers here).
    checkpointing = [m for m in model.backbone.modules() if getattr(m, 'with_cp', False)]
    assert len(checkpointing) == 5  # the ResNet and its 4 stages
    with without_activation_checkpointing(model.backbone):
        assert not any(getattr(m, 'with_cp', False) for m in model.backbone.modules())
    assert all(m.with_cp for m in checkpointing)


def test_unknown_part_bn_mode_is_rejected():
    with pytest.raises(ValueError, match="part_bn must be one of .*got 'frozen'"):
        build(part_bn='frozen')


# ---------------------------------------------------------------- loss warm-up
def test_warmup_scale_multiplies_exactly_the_part_losses():
    model = build()
    data = batch()
    model.train()
    torch.manual_seed(1)
    full = model(**data, mode='loss')
    model.part_loss_scale = 0.25
    torch.manual_seed(1)
    scaled = model(**data, mode='loss')
    for name in ('loss_rank', 'loss_overlap', 'loss_area', 'loss_con'):
        torch.testing.assert_close(scaled[name], 0.25 * full[name], msg=name)
    torch.testing.assert_close(scaled['loss_pred'], full['loss_pred'])


def test_warmup_hook_ramps_linearly_and_sets_the_model():
    hook = HOOKS.build(dict(type='PartLossWarmupHook', warmup_iters=10, start=0.2))
    assert [hook.scale_at(i) for i in (0, 5, 10, 20)] == pytest.approx(
        [0.2, 0.6, 1.0, 1.0])
    epochs = HOOKS.build(dict(type='PartLossWarmupHook', warmup_epochs=2))
    assert epochs.scale_at(5, iters_per_epoch=10) == pytest.approx(0.25)

    class FakeRunner:
        iter = 3
        model = build()

        class message_hub:
            scalars = {}

            @classmethod
            def update_scalar(cls, key, value):
                cls.scalars[key] = value

    runner = FakeRunner()
    hook.before_train_iter(runner, batch_idx=0)
    assert runner.model.part_loss_scale == pytest.approx(0.2 + 0.8 * 0.3)
    assert runner.message_hub.scalars['train/part_loss_scale'] == pytest.approx(0.44)


@pytest.mark.parametrize('kwargs, message', [
    (dict(), 'exactly one of warmup_iters and warmup_epochs'),
    (dict(warmup_iters=5, warmup_epochs=1), 'exactly one'),
    (dict(warmup_iters=-1), 'must be >= 0, got -1'),
    (dict(warmup_iters=5, start=1.5), r'start must be in \[0, 1\], got 1.5'),
])
def test_warmup_hook_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HOOKS.build(dict(type='PartLossWarmupHook', **kwargs))


# ------------------------------------------------------------- SPPN input detach
def grad_norms_from(model, loss_names):
    model.zero_grad()
    losses = model(**batch(), mode='loss')
    sum(losses[name] for name in loss_names).backward()
    def norm(module):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        return float(sum(g.pow(2).sum() for g in grads)) ** 0.5 if grads else 0.0
    return norm(model.backbone), norm(model.sppn_neck) + norm(model.sppn_head)


def test_sppn_detach_input_keeps_sppn_losses_out_of_the_backbone():
    model = build(sppn_detach_input=True).train()
    backbone, sppn = grad_norms_from(model, ['loss_rank', 'loss_overlap', 'loss_area'])
    assert backbone == 0.0 and sppn > 0
    attached = build(sppn_detach_input=False).train()
    backbone, sppn = grad_norms_from(attached, ['loss_rank'])
    assert backbone > 0 and sppn > 0


# -------------------------------------------------- student prediction with parts
def test_predict_part_top_m_averages_full_and_top_part_logits():
    model = build(predict_part_top_m=2).eval()
    inputs = batch()['inputs']
    with torch.no_grad():
        logits, extras = model.predict_logits(inputs)
        again, _ = model.predict_logits(inputs)
        student = model.run_student(inputs)
        parts = model.part_logits(inputs, student.boxes)
    torch.testing.assert_close(again, logits, rtol=0, atol=0)  # eval noise is fixed
    assert parts.shape == (2, 4, NUM_CLASSES)
    expected = (student.logits + parts[:, 0] + parts[:, 1]) / 3
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(extras['student_logits'], expected)
    assert not torch.allclose(logits, student.logits)


def test_predict_part_top_m_needs_the_sppn():
    with pytest.raises(ValueError, match='predict_part_top_m needs the SPPN'):
        build(predict_part_top_m=2, sppn_neck=None, sppn_head=None, location_heatmap=None)


# ---------------------------------------------- box content signal, fixed anchors
def test_soft_part_images_send_part_loss_gradient_into_box_regression():
    regressing = dict(student_cfg().sppn_head, regress_boxes=True)
    # The box gradient goes through the student backbone, which the synthetic
    # configs' part_backbone_grad_scale=0 closes.
    soft = build(part_images=dict(type='PartImageGenerator', blur_sigma_ratio=1 / 20,
                                  soft_edge=1.0), sppn_head=regressing,
                 part_backbone_grad_scale=1.0).train()
    soft.zero_grad()
    soft(**batch(), mode='loss')['loss_con'].backward()
    reg_grad = soft.sppn_head.reg_conv.weight.grad
    assert reg_grad is not None and reg_grad.abs().sum() > 0

    hard = build(sppn_head=regressing, part_backbone_grad_scale=1.0).train()
    hard.zero_grad()
    hard(**batch(), mode='loss')['loss_con'].backward()
    assert hard.sppn_head.reg_conv.weight.grad is None


def test_fixed_anchor_sppn_returns_anchors_and_has_no_regression_branch():
    model = build(sppn_head=dict(student_cfg().sppn_head, regress_boxes=False)).eval()
    assert not hasattr(model.sppn_head, 'reg_conv')
    inputs = batch()['inputs']
    with torch.no_grad():
        boxes = model.run_student(inputs).boxes
    head = model.sppn_head
    sizes = [(SIZE // stride_h, SIZE // stride_w)
             for stride_w, stride_h in head.prior_generator.strides]
    anchors = torch.cat(head.prior_generator.grid_priors(sizes, device='cpu'))
    anchors = torch.stack([anchors[:, 0].clamp(0, SIZE), anchors[:, 1].clamp(0, SIZE),
                           anchors[:, 2].clamp(0, SIZE), anchors[:, 3].clamp(0, SIZE)], 1)
    for image_boxes in boxes:
        for box in image_boxes:
            assert torch.isclose(anchors, box).all(dim=1).any(), box


def test_soft_composition_with_hard_masks_is_the_paper_composition():
    from mmdaf.models.utils.part_images import (
        boxes_to_pixel_masks,
        compose_soft_part_images,
        gaussian_blur,
        make_part_images,
    )
    imgs = torch.randn(2, 3, 16, 16)
    boxes = torch.tensor([[[0., 0., 8., 8.], [4., 4., 12., 12.]],
                          [[2., 2., 6., 10.], [8., 0., 16., 16.]]])
    generator = torch.Generator().manual_seed(0)
    hard = make_part_images(imgs, boxes, blur_sigma=1.0, noise_std=0.5,
                            generator=generator)
    noise = torch.randn(imgs.shape, generator=torch.Generator().manual_seed(0))
    masks = boxes_to_pixel_masks(boxes, (16, 16)).float()
    soft = compose_soft_part_images(imgs, gaussian_blur(imgs, 1.0), imgs + 0.5 * noise,
                                    masks)
    torch.testing.assert_close(soft, hard)


def test_soft_masks_are_one_inside_zero_outside_and_differentiable():
    from mmdaf.models.utils.part_images import boxes_to_soft_pixel_masks
    boxes = torch.tensor([[[4., 4., 12., 12.]]], requires_grad=True)
    masks = boxes_to_soft_pixel_masks(boxes, (16, 16), edge=0.25)
    assert masks.shape == (1, 1, 16, 16)
    assert masks[0, 0, 8, 8].item() > 0.99 and masks[0, 0, 0, 0] < 0.01
    # Pixel centre 3.5 is half a pixel outside x1 = 4: sigmoid(-2) * ~1.
    assert masks[0, 0, 8, 3].item() == pytest.approx(torch.sigmoid(torch.tensor(-2.)).item(),
                                              rel=1e-3)
    masks.sum().backward()
    # Growing the box (x1 down, x2 up) adds mask: d/dx1 < 0 < d/dx2.
    assert boxes.grad[0, 0, 0] < 0 < boxes.grad[0, 0, 2]


# ------------------------------------------------------------ teacher neck scale
def test_paf_neck_output_scale_multiplies_the_unit_norm_vector():
    torch.manual_seed(0)
    plain = MODELS.build(dict(type='PAFBilinearNeck', in_channels=8, reduced_channels=4,
                              num_groups=2))
    scaled = MODELS.build(dict(type='PAFBilinearNeck', in_channels=8, reduced_channels=4,
                               num_groups=2, output_scale=16.0))
    scaled.load_state_dict(plain.state_dict())
    feats = torch.randn(3, 8, 5, 5)
    plain_out, = plain((feats, ))
    scaled_out, = scaled((feats, ))
    assert plain_out.shape == (3, 8)
    torch.testing.assert_close(plain_out.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(scaled_out, 16.0 * plain_out)
    with pytest.raises(ValueError, match='output_scale must be > 0, got 0'):
        MODELS.build(dict(type='PAFBilinearNeck', in_channels=8, output_scale=0))


def test_other_boxes_blur_makes_part_images_differ_only_in_the_kept_box():
    from mmdaf.models.utils.part_images import gaussian_blur, make_part_images
    imgs = torch.randn(1, 3, 16, 16)
    boxes = torch.tensor([[[0., 0., 8., 8.], [8., 8., 16., 16.]]])
    parts = make_part_images(imgs, boxes, blur_sigma=1.0, other_boxes='blur')
    blurred = gaussian_blur(imgs, 1.0)
    # Part image 0: box 0 sharp, box 1 blurred like the rest; and vice versa.
    torch.testing.assert_close(parts[0, :, :8, :8], imgs[0, :, :8, :8])
    torch.testing.assert_close(parts[0, :, 8:, 8:], blurred[0, :, 8:, 8:])
    torch.testing.assert_close(parts[1, :, 8:, 8:], imgs[0, :, 8:, 8:])
    torch.testing.assert_close(parts[1, :, :8, :8], blurred[0, :, :8, :8])
    with pytest.raises(ValueError, match="other_boxes must be one of .*got 'zero'"):
        make_part_images(imgs, boxes, blur_sigma=1.0, other_boxes='zero')
