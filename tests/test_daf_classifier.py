"""DAFClassifier as the orchestrator of its components: which losses a config
gives, which passes a step runs, loss weights, where gradients stop, the
prediction fields, and the errors of configs whose parts cannot work together.
Each component is tested alone in the test file named after it."""
import copy
from collections import OrderedDict
from unittest.mock import patch

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import config_path, drop_synthetic_pretrained
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from mmdaf.models.heads.daf_distiller import DAFDistiller
from mmdaf.models.heads.daf_teacher import DAFTeacher
from mmdaf.models.heads.pooled_part_head import PooledPartHead
from mmdaf.models.losses import PartRankingLoss
from mmdaf.models.utils.box_pooling import mask_pooled_features
from mmdaf.models.utils.part_image_rank_target import PartImageRankTarget
from mmdaf.models.utils.part_images import boxes_to_pixel_masks
from mmdaf.models.utils.window_rank_target import WindowRankTarget

NUM_CLASSES = 4
SIZE = 64


def tiny_daf_cfg(**overrides) -> dict:
    """The synthetic R18 DAF model with 4 classes, for 64 px inputs; each
    override replaces the config's entry (no merge of nested dicts)."""
    cfg = Config.fromfile(config_path('daf_r18_synthetic.py'))
    init_default_scope('mmpretrain')
    model = copy.deepcopy(cfg.model)
    drop_synthetic_pretrained(model)  # random weights: no cached checkpoint needed
    model.head.num_classes = NUM_CLASSES
    model.teacher.head.num_classes = NUM_CLASSES
    model.fusion_head.num_classes = NUM_CLASSES
    model.data_preprocessor = dict(num_classes=NUM_CLASSES)
    # The config pools over the object mask; the tests switch part_pool on
    # where they test it, so the other switches can drop the heatmap.
    model.part_pool = None
    # The config no longer distils; the tests keep the paper's distillation
    # (gated as the ConvNeXt twin) so that every loss is exercised.
    model.distill = dict(student_channels=128, teacher_channels=128, gate='teacher_correct')
    for key, value in overrides.items():
        model[key] = value
    return model


def batch(batch_size: int = 2):
    torch.manual_seed(0)
    return dict(
        inputs=torch.randn(batch_size, 3, SIZE, SIZE),
        data_samples=[DataSample().set_gt_label(i % NUM_CLASSES) for i in range(batch_size)])


def build(**overrides):
    torch.manual_seed(0)
    return MODELS.build(tiny_daf_cfg(**overrides))


# The synthetic config has no concentrate loss (loss_concentrate=None).
STUDENT = {'loss_pred', 'loss_rank', 'loss_overlap', 'loss_area'}
WITH_CON = dict(loss_concentrate=dict(type='ConcentrateLoss', top_m=3))
NO_TEACHER = dict(teacher=None, distill=None, fusion_head=None)
# The paper's ranking target (the synthetic config ranks by 24 px windows).
PART_IMAGE_RANK = dict(rank_target=dict(type='PartImageRankTarget'))
POOL = dict(part_pool=dict(top_m=2, loss_weight=0.5))
OBJECT_POOL = dict(part_pool=dict(boxes='object', loss_weight=0.5))


def build_student(**overrides):
    """The student alone (SPPN + LHM, no teacher), with the concentrate loss
    so that the step runs the part pass, after the real initialisation."""
    model = build(**dict(NO_TEACHER, **WITH_CON, **overrides))
    model.init_weights()
    return model


def student_batch(batch_size: int = 2, seed: int = 0):
    """Images of mean 1 and spread 2 (BatchNorm statistics far from 0 and 1)."""
    generator = torch.Generator().manual_seed(seed)
    return dict(
        inputs=torch.randn(batch_size, 3, SIZE, SIZE, generator=generator) * 2 + 1,
        data_samples=[DataSample().set_gt_label(i % NUM_CLASSES) for i in range(batch_size)])


def no_attention_teacher() -> dict:
    teacher = tiny_daf_cfg().teacher
    teacher.attention = False
    teacher.neck.use_attention = False
    return teacher


def running_stats(module: nn.Module) -> dict:
    return {name: buf.clone() for name, buf in module.named_buffers()
            if 'running' in name}


def _cell_boxes(cell: int, cells) -> torch.Tensor:
    """(2, len(cells), 4): per image, boxes covering exactly the given cells."""
    boxes = [[col * cell, row * cell, (col + 1) * cell, (row + 1) * cell]
             for row, col in cells]
    return torch.tensor([boxes] * 2, dtype=torch.float32)


def _recording(method, seen: dict, key: str):
    """``method`` that also stores what it returns in ``seen[key]``."""

    def wrapper(*args, **kwargs):
        seen[key] = method(*args, **kwargs)
        return seen[key]

    return wrapper


def _backbone_batch_shapes(model, data) -> list:
    input_shapes = []
    model.backbone.register_forward_hook(
        lambda module, args, output: input_shapes.append(tuple(args[0].shape)))
    model(**data, mode='loss')
    return input_shapes


# ------------------------------------------------------------ losses by config
@pytest.mark.parametrize('overrides, expected', [
    (dict(location_heatmap=None, sppn_neck=None, sppn_head=None, **NO_TEACHER),
     {'loss_pred'}),
    (dict(location_heatmap=None, **NO_TEACHER), STUDENT),
    (dict(NO_TEACHER), STUDENT),
    (dict(NO_TEACHER, **WITH_CON), STUDENT | {'loss_con'}),
    (dict(NO_TEACHER, **POOL), STUDENT | {'loss_part_pool'}),
    (dict(distill=None), STUDENT | {'loss_teacher', 'loss_group', 'loss_csf'}),
    (lambda: dict(distill=None, teacher=no_attention_teacher()),
     STUDENT | {'loss_teacher', 'loss_group', 'loss_csf'}),
    (dict(), STUDENT | {'loss_teacher', 'loss_group', 'loss_csf', 'loss_hint', 'loss_soft'}),
])
def test_loss_terms_follow_the_switches(overrides, expected):
    if callable(overrides):  # reads the config: not at collection time
        overrides = overrides()
    model = build(**overrides)
    losses = model(**batch(), mode='loss')
    loss_names = {name for name in losses if name.startswith('loss')}
    assert loss_names == expected
    for name in loss_names:
        assert losses[name].dim() == 0 and torch.isfinite(losses[name]), name
    assert ('distill_kept' in losses) == ('loss_hint' in expected)


def test_components_are_built_from_their_configs():
    model = build(**POOL)
    assert isinstance(model.rank_target, WindowRankTarget) and model.rank_target.crop == 24
    assert isinstance(model.part_pool, PooledPartHead) and model.part_pool.top_m == 2
    assert isinstance(model.teacher, DAFTeacher) and model.teacher.attention
    assert model.teacher.mask_boxes == 'proposals'
    assert isinstance(model.distill, DAFDistiller)
    assert model.distill.gate == 'teacher_correct'
    assert (model.distill.student_index, model.distill.teacher_index) == (1, 0)
    assert isinstance(build(**NO_TEACHER, rank_target=None).rank_target, PartImageRankTarget)


# ------------------------------------------------------------ the part pass
def test_part_images_go_through_backbone_in_one_batched_pass():
    model = build(**NO_TEACHER, **WITH_CON)
    data = batch(batch_size=3)
    input_shapes = _backbone_batch_shapes(model, data)
    num_parts = model.sppn_head.num_parts
    side = data['inputs'].shape[-1]
    # Then one forward-only pass over the proposals' and the rank_samples'
    # single-box part images, cut to the synthetic config's 24 px windows
    # around their boxes (WindowRankTarget).
    num_samples = model.sppn_head.rank_samples
    assert num_samples == 8 and model.rank_target.crop == 24
    assert input_shapes == [(3, 3, side, side), (3 * num_parts, 3, side, side),
                            (3 * (num_parts + num_samples), 3, 24, 24)]


@pytest.mark.parametrize('overrides, part_pass', [
    (dict(), False),  # the synthetic default: no L_con, proposals by windows
    (WITH_CON, True),  # L_con reads the part logits
    (PART_IMAGE_RANK, True),  # the ranking reads their CE
])
def test_part_pass_runs_only_when_a_loss_reads_it(overrides, part_pass):
    model = build(**NO_TEACHER, **overrides)
    data = batch(batch_size=3)
    input_shapes = _backbone_batch_shapes(model, data)
    num_parts = model.sppn_head.num_parts
    side = data['inputs'].shape[-1]
    assert ((3 * num_parts, 3, side, side) in input_shapes) is part_pass
    assert input_shapes[0] == (3, 3, side, side)


def test_window_ranking_without_samples_ranks_the_proposals_by_their_windows():
    # rank_samples=0: every step ranks the N proposals alone, by their windows.
    sppn_head = dict(tiny_daf_cfg().sppn_head, rank_samples=0)
    model = build(**NO_TEACHER, sppn_head=sppn_head)
    num_parts = model.sppn_head.num_parts
    assert _backbone_batch_shapes(model, batch(batch_size=3)) == [
        (3, 3, SIZE, SIZE), (3 * num_parts, 3, 24, 24)]


@pytest.mark.parametrize('overrides', [
    dict(),  # proposals ranked by their windows
    PART_IMAGE_RANK,  # by their part images
])
def test_a_step_without_samples_runs_no_ranking_pass(overrides):
    sppn_head = tiny_daf_cfg().sppn_head
    sppn_head.rank_interval = 2
    model = build(**NO_TEACHER, sppn_head=sppn_head, **overrides)
    data = batch(batch_size=3)
    input_shapes = []
    model.backbone.register_forward_hook(
        lambda module, args, output: input_shapes.append(tuple(args[0].shape)))
    model(**data, mode='loss')  # step 1 of 2 draws and ranks the samples
    assert input_shapes[0] == (3, 3, SIZE, SIZE) and len(input_shapes) > 1
    input_shapes.clear()
    losses = model(**data, mode='loss')  # step 2: no samples, no ranking
    assert input_shapes == [(3, 3, SIZE, SIZE)]
    assert losses['loss_rank'].item() == 0.0
    assert losses['loss_overlap'].item() > 0.0


def test_part_cross_entropies_follow_the_labels_of_their_images():
    # eval mode: BatchNorm uses running statistics, so one part image can be
    # re-run alone and give the same logits as in the batched pass.
    model = build(**NO_TEACHER, **PART_IMAGE_RANK).eval()
    labels = [2, 0, 3]
    torch.manual_seed(0)
    inputs = torch.randn(3, 3, SIZE, SIZE)
    samples = [DataSample().set_gt_label(label) for label in labels]
    captured = {}
    model.backbone.register_forward_hook(
        lambda module, args, output: captured.setdefault('backbone_inputs', []).append(
            args[0].detach()))
    sppn_loss = model.sppn_head.loss

    def record_loss(boxes, scores, part_ce, object_area, **samples):
        assert not samples  # eval mode draws no samples
        captured.update(boxes=boxes.detach(), part_ce=part_ce.detach())
        return sppn_loss(boxes, scores, part_ce, object_area)

    with patch.object(model.sppn_head, 'loss', side_effect=record_loss):
        with torch.no_grad():
            model(inputs, samples, mode='loss')
    part_images = captured['backbone_inputs'][1]
    num_parts = model.sppn_head.num_parts
    assert part_images.shape == (3 * num_parts, 3, SIZE, SIZE)
    pixel_masks = boxes_to_pixel_masks(captured['boxes'], (SIZE, SIZE))
    expected_ce = torch.empty(3, num_parts)
    with torch.no_grad():
        for image in range(3):
            for part in range(num_parts):
                part_image = part_images[image * num_parts + part]
                # part image b * N + n keeps image b's pixels inside box n
                inside = pixel_masks[image, part]
                assert inside.any()
                assert torch.equal(part_image[:, inside], inputs[image][:, inside])
                logits = model.student_logits(model.backbone(part_image[None]))[0]
                expected_ce[image, part] = -logits.log_softmax(0)[labels[image]]
    assert torch.allclose(captured['part_ce'], expected_ce, atol=1e-4)


class _RecordingTarget:
    """A ranking target that keeps the batch it got and what it returned."""

    def __init__(self, target):
        self.target = target
        self.uses_part_images = target.uses_part_images

    def __call__(self, ranking_batch):
        self.batch = ranking_batch
        self.out = self.target(ranking_batch)
        return self.out


@pytest.mark.parametrize('overrides', [dict(), PART_IMAGE_RANK])
def test_ranking_targets_feed_the_sppn_ranking_loss(overrides):
    model = build(**NO_TEACHER, **overrides).train()
    target = model.rank_target = _RecordingTarget(model.rank_target)
    seen = {}
    original_loss = model.sppn_head.loss

    def recording_loss(boxes, scores, part_ce, area, **samples):
        seen.update(part_ce=part_ce, **samples)
        return original_loss(boxes, scores, part_ce, area, **samples)

    data = batch()
    with patch.object(model, 'run_student', _recording(model.run_student, seen, 'student')), \
            patch.object(model, 'part_logits', _recording(model.part_logits, seen, 'parts')), \
            patch.object(model.sppn_head, 'loss', recording_loss):
        model(**data, mode='loss')
    assert seen['part_ce'] is target.out[0]
    assert seen['sample_ce'] is target.out[1]
    assert seen['sample_ce'].shape == (2, model.sppn_head.rank_samples)
    assert seen['sample_scores'] is seen['student'].sample_scores
    ranking = target.batch
    assert ranking.inputs is data['inputs'] and ranking.labels.tolist() == [0, 1]
    assert ranking.proposals is seen['student'].boxes
    assert ranking.samples is seen['student'].sample_boxes
    assert ranking.part_images is model.part_image_generator
    if isinstance(target.target, WindowRankTarget):
        # No part pass: nothing reads the part images.
        assert ranking.proposal_ce is None and 'parts' not in seen
    else:
        parts = seen['parts']
        expected = F.cross_entropy(parts.flatten(0, 1), torch.tensor([0, 1]).repeat_interleave(
            parts.shape[1]), reduction='none').view(2, -1)
        torch.testing.assert_close(ranking.proposal_ce, expected.detach())
    # The target's student normalises as the clean pass did: the clean images
    # themselves get the clean pass's logits, and no running statistic moves.
    before = running_stats(model.backbone)
    with torch.no_grad():
        clean_logits = ranking.classify(data['inputs'])
    torch.testing.assert_close(clean_logits, seen['student'].logits.detach(),
                               rtol=1e-4, atol=1e-4)
    after = running_stats(model.backbone)
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_training_step_ranks_proposals_with_the_sampled_anchors():
    sppn_head = dict(tiny_daf_cfg().sppn_head, rank_samples=3,
                     loss_rank=dict(type='PartRankingLoss', margin=1.0, loss_weight=1.0))
    model = build_student(sppn_head=sppn_head, **PART_IMAGE_RANK).train()
    data = student_batch()
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


def test_training_steps_with_rank_interval_draw_samples_on_schedule():
    sppn_head = dict(tiny_daf_cfg().sppn_head, rank_samples=3, rank_interval=2)
    model = build_student(sppn_head=sppn_head, **PART_IMAGE_RANK).train()
    data = student_batch()
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


# ------------------------------------------------ BatchNorm of the part pass
def test_part_pass_leaves_running_stats_to_the_clean_batch():
    """After a training step that runs the part pass and the ranking windows,
    the running statistics are those of one train-mode pass on the clean
    batch alone."""
    model = build_student()
    reference = copy.deepcopy(model.backbone)
    reference.train()  # mmpretrain ResNet.train returns None
    data = student_batch()
    model.train()
    shapes = _backbone_batch_shapes(model, data)
    assert len(shapes) == 3  # clean images, part images, windows
    with torch.no_grad():
        reference(data['inputs'])
    after, expected = running_stats(model.backbone), running_stats(reference)
    assert after.keys() == expected.keys() and len(after) == 40  # R18: 20 BN layers
    for name in after:
        torch.testing.assert_close(after[name], expected[name], msg=name)


def test_part_images_without_clean_statistics_use_the_running_ones_in_training():
    model = build_student().train()
    images = student_batch(batch_size=3)['inputs']
    before = running_stats(model.backbone)
    with torch.no_grad():
        trained = model.classify_part_images(images)
    after = running_stats(model.backbone)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert model.backbone.training and model.backbone.layer1[0].bn1.training
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(trained, model.classify_part_images(images))


# ------------------------------------------------------------ weights, warm-up
def test_loss_weights_scale_each_group():
    data = batch()
    base = build()(**data, mode='loss')
    weighted = build(loss_weights=dict(student=2.0, teacher=3.0, fusion=0.5))(**data,
                                                                          mode='loss')
    assert weighted['loss_pred'].item() == pytest.approx(2 * base['loss_pred'].item(), rel=1e-5)
    assert weighted['loss_teacher'].item() == pytest.approx(3 * base['loss_teacher'].item(),
                                                            rel=1e-5)
    assert weighted['loss_group'].item() == pytest.approx(3 * base['loss_group'].item(),
                                                          rel=1e-5)
    assert weighted['loss_csf'].item() == pytest.approx(0.5 * base['loss_csf'].item(), rel=1e-5)
    for name in ('loss_overlap', 'loss_area', 'loss_hint', 'loss_soft'):
        assert weighted[name].item() == pytest.approx(2 * base[name].item(), rel=1e-5), name
    # The logged share of the distilled batch is not a loss: not weighted.
    assert weighted['distill_kept'].item() == base['distill_kept'].item()


def test_warmup_scale_multiplies_exactly_the_sppn_losses():
    model = build_student(**POOL)
    data = student_batch()
    model.train()
    torch.manual_seed(1)
    full = model(**data, mode='loss')
    model.part_loss_scale = 0.25
    torch.manual_seed(1)
    scaled = model(**data, mode='loss')
    for name in ('loss_rank', 'loss_overlap', 'loss_area', 'loss_con'):
        torch.testing.assert_close(scaled[name], 0.25 * full[name], msg=name)
    for name in ('loss_pred', 'loss_part_pool'):
        torch.testing.assert_close(scaled[name], full[name], msg=name)


# ------------------------------------------------------------ gradients
def test_distillation_gradients_stop_at_the_teacher():
    model = build()
    losses = model(**batch(), mode='loss')
    (losses['loss_hint'] + losses['loss_soft']).backward()
    teacher_grads = [p.grad for p in model.teacher.parameters() if p.grad is not None]
    assert all(float(g.abs().sum()) == 0.0 for g in teacher_grads)
    assert model.distill.hint_regressor[0].weight.grad.abs().sum() > 0
    assert model.backbone.layer3[0].conv1.weight.grad.abs().sum() > 0
    assert model.head.fc.weight.grad.abs().sum() > 0


def test_student_parts_are_trained_through_the_sppn_losses():
    regressing = dict(tiny_daf_cfg().sppn_head, regress_boxes=True)
    # The part pass sends gradient into the backbone (scale 1), yet the part
    # images are composed from detached boxes: L_con reaches no box regression.
    model = build(**NO_TEACHER, **WITH_CON, sppn_head=regressing,
                  part_backbone_grad_scale=1.0)
    losses = model(**batch(), mode='loss')
    losses['loss_rank'].backward(retain_graph=True)
    assert model.sppn_head.score_conv.weight.grad.abs().sum() > 0
    assert model.sppn_head.reg_conv.weight.grad is None
    model.zero_grad()
    losses['loss_con'].backward(retain_graph=True)
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.sppn_head.reg_conv.weight.grad is None
    model.zero_grad()
    (losses['loss_overlap'] + losses['loss_area']).backward()
    assert model.sppn_head.reg_conv.weight.grad.abs().sum() > 0


def test_fusion_layer_receives_gradient_in_the_full_model():
    model = build()
    losses = model(**batch(), mode='loss')
    total, _ = model.parse_losses(losses)
    total.backward()
    weight_grad = model.fusion_head.fc.weight.grad.clone()
    bias_grad = model.fusion_head.fc.bias.grad.clone()
    assert weight_grad.abs().sum() > 0 and torch.isfinite(weight_grad).all()
    # only loss_csf reaches the fusion layer, and all of it does
    model.zero_grad()
    losses = model(**batch(), mode='loss')
    losses['loss_csf'].backward()
    assert torch.allclose(model.fusion_head.fc.weight.grad, weight_grad, atol=1e-6)
    assert torch.allclose(model.fusion_head.fc.bias.grad, bias_grad, atol=1e-6)


def _grad_norms_from(model, loss_names):
    model.zero_grad()
    losses = model(**student_batch(), mode='loss')
    sum(losses[name] for name in loss_names).backward()

    def norm(module):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        return float(sum(g.pow(2).sum() for g in grads)) ** 0.5 if grads else 0.0

    return norm(model.backbone), norm(model.sppn_neck) + norm(model.sppn_head)


def test_sppn_detach_input_keeps_sppn_losses_out_of_the_backbone():
    model = build_student(sppn_detach_input=True).train()
    backbone, sppn = _grad_norms_from(model, ['loss_rank', 'loss_overlap', 'loss_area'])
    assert backbone == 0.0 and sppn > 0
    attached = build_student(sppn_detach_input=False).train()
    backbone, sppn = _grad_norms_from(attached, ['loss_rank'])
    assert backbone > 0 and sppn > 0


def _loss_con_grads(scale: float):
    model = build(**NO_TEACHER, **WITH_CON, part_backbone_grad_scale=scale)
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


# ------------------------------------------------------------ prediction
def test_predict_returns_fused_scores_and_what_the_model_looked_at():
    model = build().eval()
    fc = model.fusion_head.fc
    with torch.no_grad():  # fusion weights that are not the average
        generator = torch.Generator().manual_seed(1)
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=generator))
        fc.bias.copy_(torch.randn(fc.bias.shape, generator=generator))
    data = batch()
    with torch.no_grad():
        samples = model(**data, mode='predict')
        logits = model(data['inputs'], mode='tensor')
        # the two streams, computed one by one
        student = model.run_student(data['inputs'])
        teacher_input, saliency = model.teacher.build_input(data['inputs'], student.heatmap,
                                                            student.boxes)
        teacher_logits = model.teacher(teacher_input, saliency).logits
    # the fusion layer by hand: [z_s, z_t] W^T + b
    fused = torch.cat([student.logits, teacher_logits], dim=1) @ fc.weight.T + fc.bias
    assert torch.allclose(logits, fused, atol=1e-5)
    num_parts = model.sppn_head.num_parts
    assert len(samples) == 2
    for index, sample in enumerate(samples):
        assert torch.allclose(sample.pred_score, fused[index].softmax(0), atol=1e-6)
        assert sample.pred_label.item() == int(fused[index].argmax())
        assert torch.allclose(sample.student_score, student.logits[index].softmax(0),
                              atol=1e-6)
        assert torch.allclose(sample.teacher_score, teacher_logits[index].softmax(0),
                              atol=1e-6)
        # the fused prediction is neither stream
        assert (sample.pred_score - sample.student_score).abs().max() > 1e-3
        assert (sample.pred_score - sample.teacher_score).abs().max() > 1e-3
        assert torch.equal(sample.part_boxes, student.boxes[index])
        assert torch.equal(sample.part_scores, student.box_scores[index])
        assert sample.part_boxes.shape == (num_parts, 4)
        assert torch.equal(sample.heatmap, student.heatmap[index])
        assert sample.heatmap.shape == (1, SIZE // 8, SIZE // 8)
        assert float(sample.heatmap.min()) >= 0 and float(sample.heatmap.max()) <= 1


def test_predict_without_teacher_or_parts_leaves_their_fields_out():
    model = build(location_heatmap=None, sppn_neck=None, sppn_head=None, **NO_TEACHER).eval()
    inputs = batch()['inputs']
    with torch.no_grad():
        samples = model.predict(inputs)
        logits, extras = model.predict_logits(inputs)
    torch.testing.assert_close(extras.pop('student_logits'), logits)
    assert extras == dict(teacher_logits=None, part_boxes=None, part_scores=None,
                          heatmap=None)
    for index, sample in enumerate(samples):
        torch.testing.assert_close(sample.pred_score, logits[index].softmax(0))
        torch.testing.assert_close(sample.student_score, sample.pred_score)
        assert not {'teacher_score', 'part_boxes', 'part_scores', 'heatmap'} & set(sample.keys())


def test_fused_score_starts_as_the_average_of_student_and_teacher():
    model = build()
    model.init_weights()
    model.eval()
    with torch.no_grad():
        logits, extras = model.predict_logits(batch()['inputs'])
    average = (extras['student_logits'] + extras['teacher_logits']) / 2
    assert torch.allclose(logits, average, atol=1e-5)


def test_prediction_skips_the_teacher_grouping_loss():
    model = build().eval()
    inputs = batch()['inputs']
    neck = model.teacher.neck
    with torch.no_grad():
        student = model.run_student(inputs)
        teacher_input, saliency = model.teacher.build_input(inputs, student.heatmap,
                                                            student.boxes)
        full = model.teacher(teacher_input, saliency)
        with patch.object(neck, 'grouping_loss', wraps=neck.grouping_loss) as loss:
            _, extras = model.predict_logits(inputs)
    assert loss.call_count == 0
    assert torch.equal(extras['teacher_logits'], full.logits)


def test_the_proposals_reach_the_teacher_through_its_saliency_mask():
    model = build().eval()
    # As after loading 3-channel ImageNet weights: the teacher backbone does
    # not look at the heatmap and mask channels, so only the PAF neck can.
    with torch.no_grad():
        model.teacher.backbone.conv1.weight[:, 3:] = 0
    inputs = batch()['inputs']
    num_parts = model.sppn_head.num_parts

    def teacher_logits(box: list) -> torch.Tensor:
        boxes = torch.tensor(box).expand(2, num_parts, 4).clone()
        with patch.object(model.sppn_head, 'propose',
                          return_value=(boxes, torch.zeros(2, num_parts))):
            with torch.no_grad():
                _, extras = model.predict_logits(inputs)
        return extras['teacher_logits']

    top_left = teacher_logits([0.0, 0.0, 32.0, 32.0])
    bottom_right = teacher_logits([32.0, 32.0, 64.0, 64.0])
    assert (top_left - bottom_right).abs().max() > 1e-4
    # the same two masks with the part attention filter switched off
    model.teacher.neck.use_attention = False
    assert torch.allclose(teacher_logits([0.0, 0.0, 32.0, 32.0]),
                          teacher_logits([32.0, 32.0, 64.0, 64.0]), atol=1e-6)


def test_ground_truth_teacher_mask_reads_the_data_samples_not_the_proposals():
    teacher = tiny_daf_cfg().teacher
    teacher.mask_boxes = 'ground_truth'
    model = build(teacher=teacher).eval()
    data = batch(batch_size=2)
    regions = [torch.tensor([[0.0, 0.0, 8.0, 8.0], [40.0, 40.0, 48.0, 56.0]]),
               torch.tensor([[16.0, 8.0, 32.0, 16.0], [16.0, 8.0, 32.0, 16.0]])]
    for sample, image_regions in zip(data['data_samples'], regions):
        sample.set_field(image_regions, 'gt_bboxes')
    num_parts = model.sppn_head.num_parts
    seen = {}

    def predict_with_proposals(box: list):
        boxes = torch.tensor(box).expand(2, num_parts, 4).clone()
        with patch.object(model.sppn_head, 'propose',
                          return_value=(boxes, torch.zeros(2, num_parts))):
            return model.predict_logits(data['inputs'], data['data_samples'])[1]

    with torch.no_grad(), patch.object(
            model.teacher, 'build_input',
            _recording(model.teacher.build_input, seen, 'teacher_input')):
        first = predict_with_proposals([0.0, 0.0, 32.0, 32.0])
        # 64 + 128 pixels in image 0's two regions; image 1's region twice, 128.
        saliency = seen['teacher_input'][1]
        assert saliency[0].sum().item() == 64 + 128 and saliency[1].sum().item() == 128
        # The proposals no longer reach the teacher: the same prediction
        # whatever they are.
        second = predict_with_proposals([32.0, 32.0, 64.0, 64.0])
        # The training step reads the regions too.
        losses = model.loss(data['inputs'], data['data_samples'])
    assert not torch.equal(first['part_boxes'], second['part_boxes'])
    torch.testing.assert_close(first['teacher_logits'], second['teacher_logits'])
    assert torch.isfinite(losses['loss_teacher'])
    with pytest.raises(ValueError, match='need gt_bboxes on every data sample'):
        model.predict_logits(data['inputs'])


def test_predict_part_top_m_averages_full_and_top_part_logits():
    model = build_student(predict_part_top_m=2).eval()
    inputs = student_batch()['inputs']
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


# ------------------------------------------------------------ part_pool
def test_part_pool_loss_trains_the_backbone_but_not_the_proposals():
    model = build(**NO_TEACHER, **POOL)
    seen = {}
    with patch.object(model, 'pooled_part_logits',
                      _recording(model.pooled_part_logits, seen, 'logits')):
        losses = model(**batch(), mode='loss')
    assert seen['logits'].shape == (2, 2, NUM_CLASSES)
    labels = torch.tensor([0, 1])
    expected = 0.5 * F.cross_entropy(seen['logits'].flatten(0, 1), labels.repeat_interleave(2))
    torch.testing.assert_close(losses['loss_part_pool'], expected)
    losses['loss_part_pool'].backward()
    assert model.backbone.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert model.head.fc.weight.grad.abs().sum() > 0
    # The boxes are detached: no gradient into the SPPN.
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0
               for p in model.sppn_head.parameters())


def test_part_pool_pools_the_student_s_top_proposals():
    model = build(**NO_TEACHER, **POOL).eval()
    inputs = batch()['inputs']
    with torch.no_grad():
        student = model.run_student(inputs)
        pooled = model.pooled_part_logits(student, (SIZE, SIZE), None)
        expected = PooledPartHead.box_logits(model.head, student.feats[-1],
                                             student.boxes[:, :2], (SIZE, SIZE))
    torch.testing.assert_close(pooled, expected)


def test_part_pool_prediction_averages_image_and_pooled_logits():
    model = build(**NO_TEACHER, **POOL).eval()
    inputs = batch()['inputs']
    with torch.no_grad():
        logits, extras = model.predict_logits(inputs)
        student = model.run_student(inputs)
        pooled = model.pooled_part_logits(student, (SIZE, SIZE), None)
    expected = torch.cat([student.logits[:, None], pooled], dim=1).mean(dim=1)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(extras['student_logits'], expected)
    model.part_pool.predict = False
    with torch.no_grad():
        torch.testing.assert_close(model.predict_logits(inputs)[0], student.logits)


def test_part_pool_samples_train_the_pooled_loss_at_the_sampled_anchors():
    model = build(**NO_TEACHER, part_pool=dict(top_m=2, loss_weight=0.5, samples=True))
    seen = {}
    with patch.object(model, 'run_student', _recording(model.run_student, seen, 'student')):
        losses = model(**batch(), mode='loss')
    student = seen['student']
    num_samples = model.sppn_head.rank_samples
    assert student.sample_boxes.shape == (2, num_samples, 4)
    with torch.no_grad():
        sample_logits = PooledPartHead.box_logits(model.head, student.feats[-1],
                                                  student.sample_boxes, (SIZE, SIZE))
    expected = 0.5 * F.cross_entropy(
        sample_logits.flatten(0, 1), torch.tensor([0, 1]).repeat_interleave(num_samples))
    torch.testing.assert_close(losses['loss_part_pool_samples'], expected)
    losses['loss_part_pool_samples'].backward()
    assert model.backbone.layer4[0].conv1.weight.grad.abs().sum() > 0
    # The sampled boxes are detached: no gradient into the SPPN's scores.
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0
               for p in model.sppn_head.parameters())
    # Off by default: no such loss.
    plain = build(**NO_TEACHER, **POOL)
    assert 'loss_part_pool_samples' not in plain(**batch(), mode='loss')


def test_part_pool_samples_add_to_random_boxes_too():
    model = build(**NO_TEACHER, part_pool=dict(boxes='random', samples=True))
    losses = model(**batch(), mode='loss')
    assert {'loss_part_pool', 'loss_part_pool_samples'} <= set(losses)


def test_ground_truth_part_pool_pools_every_given_part_in_loss_and_prediction():
    model = build(**NO_TEACHER,
                  part_pool=dict(top_m=1, loss_weight=0.5, boxes='ground_truth')).eval()
    data = batch(batch_size=2)
    with torch.no_grad():
        c5 = model.run_student(data['inputs']).feats[-1]
    cell = SIZE // c5.shape[-1]
    # Three parts per image, each exactly one cell: top_m=1 does not cut them.
    cells = [[(0, 1), (2, 3), (3, 3)], [(1, 1), (0, 0), (2, 0)]]
    for sample, image_cells in zip(data['data_samples'], cells):
        sample.set_field(_cell_boxes(cell, image_cells)[0].numpy(), 'gt_bboxes')
    with torch.no_grad():
        logits, _ = model.predict_logits(data['inputs'], data['data_samples'])
        image_logits = model.run_student(data['inputs']).logits
        losses = model.loss(data['inputs'], data['data_samples'])
    pooled = torch.stack([
        torch.stack([model.head((c5[i:i + 1, :, row, col], ))[0] for row, col in image_cells])
        for i, image_cells in enumerate(cells)])  # (2, 3, K)
    expected = torch.cat([image_logits[:, None], pooled], dim=1).mean(dim=1)
    torch.testing.assert_close(logits, expected)
    labels = torch.tensor([0, 1]).repeat_interleave(3)
    torch.testing.assert_close(losses['loss_part_pool'],
                               0.5 * F.cross_entropy(pooled.flatten(0, 1), labels))
    # Without the regions on the data samples the error says how to load them.
    with pytest.raises(ValueError, match=r"need gt_bboxes on every data sample: load them "
                       r'with SyntheticFGVC\(with_part_boxes=True\)'):
        model.predict(data['inputs'])


def test_object_part_pool_is_the_head_on_the_last_stage_over_the_object_mask():
    model = build(**NO_TEACHER, **OBJECT_POOL).eval()
    data = batch(batch_size=2)
    with torch.no_grad():
        logits, _ = model.predict_logits(data['inputs'])
        student = model.run_student(data['inputs'])
        pooled = model.pooled_part_logits(student, (SIZE, SIZE), None)
        losses = model.loss(data['inputs'], data['data_samples'])
    assert pooled.shape == (2, 1, NUM_CLASSES)
    # The heatmap's mask is at stride 8, the last stage at 16: area weights.
    assert student.object_mask.shape[-2:] == (8, 8)
    expected = model.head((mask_pooled_features(student.feats[-1], student.object_mask), ))
    torch.testing.assert_close(pooled[:, 0], expected)
    torch.testing.assert_close(logits, (student.logits + expected) / 2)
    torch.testing.assert_close(losses['loss_part_pool'],
                               0.5 * F.cross_entropy(expected, torch.tensor([0, 1])))


def test_object_part_pool_needs_the_heatmap_but_not_the_sppn():
    model = build(sppn_neck=None, sppn_head=None, **NO_TEACHER, **OBJECT_POOL)
    losses = model(**batch(), mode='loss')
    assert {name for name in losses if name.startswith('loss')} == {'loss_pred',
                                                                    'loss_part_pool'}


def test_fusion_is_trained_on_the_student_prediction_it_gets_at_test_time():
    model = build(**OBJECT_POOL)
    data = batch(batch_size=2)
    fused_inputs = []
    model.fusion_head.register_forward_hook(
        lambda module, args, output: fused_inputs.append(args[0][0].detach()))
    seen = {}
    with patch.object(model, 'pooled_part_logits',
                      _recording(model.pooled_part_logits, seen, 'pooled')), \
            patch.object(model, 'run_student',
                         _recording(model.run_student, seen, 'student')):
        model(**data, mode='loss')
    expected = (seen['student'].logits + seen['pooled'][:, 0]) / 2
    torch.testing.assert_close(fused_inputs[0], expected.detach())
    # Without part_pool.predict the fusion gets the image's logits alone.
    model.part_pool.predict = False
    fused_inputs.clear()
    with patch.object(model, 'run_student', _recording(model.run_student, seen, 'student')):
        model(**data, mode='loss')
    torch.testing.assert_close(fused_inputs[0], seen['student'].logits.detach())


# ------------------------------------------------------------ config errors
@pytest.mark.parametrize('overrides, message', [
    (dict(sppn_head=None), 'sppn_neck and sppn_head must be set together'),
    (dict(teacher=None), 'distill needs a teacher'),
    (dict(teacher=None, distill=None), 'fusion_head needs a teacher'),
    (dict(part_images=dict(blur=3)), "bad part_images config .*unexpected keyword argument 'blur'"),
    (dict(loss_weights=dict(studnet=1.0)), "unknown loss_weights keys \\['studnet'\\]"),
    (dict(predict_part_top_m=-1), 'predict_part_top_m must be >= 0, got -1'),
    (dict(predict_part_top_m=2, sppn_neck=None, sppn_head=None, location_heatmap=None),
     'predict_part_top_m needs the SPPN'),
    (dict(part_backbone_grad_scale=1.5), r'part_backbone_grad_scale must be in \[0, 1\], '
                                         'got 1.5'),
    (dict(sppn_neck=None, sppn_head=None, location_heatmap=None, **NO_TEACHER,
          part_pool=dict()), r"part_pool boxes='proposals' \(samples=False\) needs the "
                             r'SPPN \(sppn_head=None\)'),
    (dict(sppn_neck=None, sppn_head=None, **NO_TEACHER,
          part_pool=dict(boxes='ground_truth', samples=True)),
     r"part_pool boxes='ground_truth' \(samples=True\) needs the SPPN"),
    (dict(location_heatmap=None, **NO_TEACHER, **OBJECT_POOL),
     "part_pool boxes='object' pools over the location heatmap's object mask; "
     'location_heatmap is None'),
    # A component's own error names the component.
    (dict(part_pool=dict(top_m=0)), 'PooledPartHead: top_m must be >= 1, got 0'),
    (lambda: dict(teacher=dict(tiny_daf_cfg().teacher, attention=False)),
     'DAFTeacher: attention=False gives the neck no saliency mask'),
    (dict(distill=dict(student_channels=128, teacher_channels=128, gate='sometimes')),
     'DAFDistiller: gate must be one of'),
    (dict(rank_target=dict(type='WindowRankTarget', crop=0)),
     'WindowRankTarget: crop must be >= 1, got 0'),
])
def test_bad_configs_fail_with_clear_messages(overrides, message):
    if callable(overrides):
        overrides = overrides()
    with pytest.raises(ValueError, match=message):
        build(**overrides)


def test_part_pool_samples_need_sampled_anchors():
    cfg = tiny_daf_cfg(**NO_TEACHER, part_pool=dict(samples=True))
    cfg.sppn_head.rank_samples = 0
    with pytest.raises(ValueError, match=r"part_pool.samples trains the pooled cross "
                       r"entropy at the SPPN's sampled anchors; set sppn_head.rank_samples "
                       r"> 0, got 0"):
        MODELS.build(cfg)


# ------------------------------------------------------------ old checkpoints
def _old_layout(state_dict: OrderedDict) -> OrderedDict:
    """``state_dict`` as saved before the split into components: the
    distiller's regressor at ``hint_regressor.*`` of the classifier (its
    metadata too)."""
    def old(key):
        return key.replace('distill.hint_regressor', 'hint_regressor')

    converted = OrderedDict((old(key), value) for key, value in state_dict.items())
    converted._metadata = OrderedDict(
        (old(key), value) for key, value in state_dict._metadata.items()
        if key != 'distill')
    return converted


@pytest.mark.parametrize('loader', ['torch', 'mmengine'])
def test_a_checkpoint_with_the_old_distiller_keys_loads_into_the_new_model(loader):
    from mmengine.runner.checkpoint import load_state_dict
    source = build()
    with torch.no_grad():  # values that no fresh model has
        for tensor in source.distill.hint_regressor.state_dict().values():
            tensor.copy_(torch.rand(tensor.shape) * 5 + 1)
    saved = _old_layout(source.state_dict())
    old_keys = sorted(key for key in saved if key.startswith('hint_regressor.'))
    assert old_keys == ['hint_regressor.0.weight', 'hint_regressor.1.bias',
                        'hint_regressor.1.num_batches_tracked',
                        'hint_regressor.1.running_mean', 'hint_regressor.1.running_var',
                        'hint_regressor.1.weight']
    assert not any(key.startswith('distill.') for key in saved)

    torch.manual_seed(1)
    target = MODELS.build(tiny_daf_cfg())
    assert not torch.equal(target.distill.hint_regressor[0].weight,
                           source.distill.hint_regressor[0].weight)
    if loader == 'torch':
        result = target.load_state_dict(saved, strict=True)
        assert result.missing_keys == [] and result.unexpected_keys == []
    else:
        load_state_dict(target, saved, strict=True)  # raises on any key mismatch
    loaded = target.state_dict()
    expected = source.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    # The caller's dict keeps its keys: the loaders rename in their own copy.
    assert sorted(key for key in saved if key.startswith('hint_regressor.')) == old_keys
