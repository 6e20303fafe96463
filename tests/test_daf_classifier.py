"""DAFClassifier: parts switched by config, losses, gradients, predictions."""
import copy
from unittest.mock import patch

import pytest
import torch
from conftest import config_path, drop_synthetic_pretrained
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from mmdaf.models.classifiers.daf_classifier import StudentOutput
from mmdaf.models.utils.part_images import boxes_to_pixel_masks

NUM_CLASSES = 4
SIZE = 64


def tiny_daf_cfg(**overrides) -> dict:
    """The synthetic R18 DAF model with 4 classes, for 64 px inputs."""
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
    model.update(overrides)
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


@pytest.mark.parametrize('overrides, expected', [
    (dict(location_heatmap=None, sppn_neck=None, sppn_head=None, teacher=None,
          distill=None, fusion_head=None), {'loss_pred'}),
    (dict(location_heatmap=None, teacher=None, distill=None, fusion_head=None), STUDENT),
    (dict(teacher=None, distill=None, fusion_head=None), STUDENT),
    (dict(teacher=None, distill=None, fusion_head=None, **WITH_CON), STUDENT | {'loss_con'}),
    (dict(distill=None), STUDENT | {'loss_teacher', 'loss_group', 'loss_csf'}),
    (dict(), STUDENT | {'loss_teacher', 'loss_group', 'loss_csf', 'loss_hint', 'loss_soft'}),
])
def test_loss_terms_follow_the_switches(overrides, expected):
    model = build(**overrides)
    losses = model(**batch(), mode='loss')
    loss_names = {name for name in losses if name.startswith('loss')}
    assert loss_names == expected
    for name in loss_names:
        assert losses[name].dim() == 0 and torch.isfinite(losses[name]), name


def _backbone_batch_shapes(model, data) -> list:
    input_shapes = []
    model.backbone.register_forward_hook(
        lambda module, args, output: input_shapes.append(tuple(args[0].shape)))
    model(**data, mode='loss')
    return input_shapes


def test_part_images_go_through_backbone_in_one_batched_pass():
    model = build(teacher=None, distill=None, fusion_head=None, **WITH_CON)
    data = batch(batch_size=3)
    input_shapes = _backbone_batch_shapes(model, data)
    num_parts = model.sppn_head.num_parts
    side = data['inputs'].shape[-1]
    # Then one forward-only pass over the proposals' and the rank_samples'
    # single-box part images, cut to the synthetic config's 24 px windows
    # around their boxes (proposal_rank_ce='window').
    num_samples = model.sppn_head.rank_samples
    assert num_samples == 8 and model.single_box_crop == 24
    assert model.proposal_rank_ce == 'window'
    assert input_shapes == [(3, 3, side, side), (3 * num_parts, 3, side, side),
                            (3 * (num_parts + num_samples), 3, 24, 24)]


@pytest.mark.parametrize('overrides, part_pass', [
    (dict(), False),  # the synthetic default: no L_con, proposals by windows
    (WITH_CON, True),  # L_con reads the part logits
    (dict(proposal_rank_ce='part_image'), True),  # the ranking reads their CE
    (dict(single_box_crop=0), True),  # no windows: proposals by their part images
])
def test_part_pass_runs_only_when_a_loss_reads_it(overrides, part_pass):
    model = build(teacher=None, distill=None, fusion_head=None, **overrides)
    assert model.part_pass_needed() is part_pass
    # Without samples (eval mode) the proposals are ranked by their part images.
    assert model.part_pass_needed(sampling=False) is True
    data = batch(batch_size=3)
    input_shapes = _backbone_batch_shapes(model, data)
    num_parts = model.sppn_head.num_parts
    side = data['inputs'].shape[-1]
    assert ((3 * num_parts, 3, side, side) in input_shapes) is part_pass
    assert input_shapes[0] == (3, 3, side, side)


def test_loss_weights_scale_each_group():
    data = batch()
    base = build()(**data, mode='loss')
    weighted = build(loss_weights=dict(student=2.0, teacher=3.0, fusion=0.5))(**data,
                                                                          mode='loss')
    assert weighted['loss_pred'].item() == pytest.approx(2 * base['loss_pred'].item(), rel=1e-5)
    assert weighted['loss_teacher'].item() == pytest.approx(3 * base['loss_teacher'].item(),
                                                            rel=1e-5)
    assert weighted['loss_csf'].item() == pytest.approx(0.5 * base['loss_csf'].item(), rel=1e-5)


def test_distillation_gradients_stop_at_the_teacher():
    model = build()
    losses = model(**batch(), mode='loss')
    (losses['loss_hint'] + losses['loss_soft']).backward()
    teacher_grads = [p.grad for p in model.teacher.parameters() if p.grad is not None]
    assert all(float(g.abs().sum()) == 0.0 for g in teacher_grads)
    assert model.hint_regressor[0].weight.grad.abs().sum() > 0
    assert model.backbone.layer3[0].conv1.weight.grad.abs().sum() > 0
    assert model.head.fc.weight.grad.abs().sum() > 0


def test_student_parts_are_trained_through_the_sppn_losses():
    regressing = dict(tiny_daf_cfg().sppn_head, regress_boxes=True)
    model = build(teacher=None, distill=None, fusion_head=None, sppn_head=regressing)
    losses = model(**batch(), mode='loss')
    losses['loss_rank'].backward(retain_graph=True)
    assert model.sppn_head.score_conv.weight.grad.abs().sum() > 0
    assert model.sppn_head.reg_conv.weight.grad is None
    model.zero_grad()
    (losses['loss_overlap'] + losses['loss_area']).backward()
    assert model.sppn_head.reg_conv.weight.grad.abs().sum() > 0


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
        teacher_input, saliency = model.teacher_input(data['inputs'], student)
        teacher_logits = model.teacher(teacher_input, saliency).logits
    # the fusion layer by hand: [z_s, z_t] W^T + b
    fused = torch.cat([student.logits, teacher_logits], dim=1) @ fc.weight.T + fc.bias
    assert torch.allclose(logits, fused, atol=1e-5)
    num_parts = model.sppn_head.num_parts
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


def test_fused_score_starts_as_the_average_of_student_and_teacher():
    model = build()
    model.init_weights()
    model.eval()
    with torch.no_grad():
        logits, extras = model.predict_logits(batch()['inputs'])
    average = (extras['student_logits'] + extras['teacher_logits']) / 2
    assert torch.allclose(logits, average, atol=1e-5)


def hand_student_output(heatmap, boxes) -> StudentOutput:
    """A StudentOutput with a known heatmap and known boxes (batch of 2)."""
    return StudentOutput(feats=(), logits=torch.zeros(2, NUM_CLASSES), heatmap=heatmap,
                         object_mask=None, object_area=torch.full((2, ), SIZE**2 / 2),
                         boxes=boxes, box_scores=None)


def test_teacher_input_has_heatmap_and_box_mask_channels():
    model = build().eval()
    inputs = batch()['inputs']
    # Heatmap on the stride-8 grid (8 x 8): image 0 a ramp along x, column j
    # is j / 7; image 1 a constant 0.25.
    heatmap = torch.zeros(2, 1, 8, 8)
    heatmap[0, 0] = torch.arange(8.0) / 7
    heatmap[1, 0] = 0.25
    # Pixel (y, x) is in box (x1, y1, x2, y2) when (x + 0.5, y + 0.5) lies in
    # [x1, x2) x [y1, y2); the last box of image 1 has no area.
    boxes = torch.tensor([[[8.4, 16.0, 24.6, 40.0], [40.0, 40.0, 48.0, 44.0]],
                          [[0.0, 0.0, 64.0, 8.0], [30.0, 30.0, 30.0, 50.0]]])
    teacher_input, saliency = model.teacher_input(inputs, hand_student_output(heatmap, boxes))
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
    teacher_input, saliency = model.teacher_input(inputs, hand_student_output(None, None))
    assert torch.equal(teacher_input[:, 3:], torch.ones(2, 2, SIZE, SIZE))
    assert torch.equal(saliency, torch.ones(2, 1, SIZE, SIZE))


def test_prediction_skips_the_teacher_grouping_loss():
    model = build().eval()
    inputs = batch()['inputs']
    neck = model.teacher.neck
    with torch.no_grad():
        student = model.run_student(inputs)
        teacher_input, saliency = model.teacher_input(inputs, student)
        full = model.teacher(teacher_input, saliency)
        light = model.teacher(teacher_input, saliency, with_grouping_loss=False)
        with patch.object(neck, 'grouping_loss', wraps=neck.grouping_loss) as loss:
            _, extras = model.predict_logits(inputs)
    assert full.grouping_loss is not None and light.grouping_loss is None
    assert torch.equal(light.logits, full.logits)
    assert all(torch.equal(a, b) for a, b in zip(light.feats, full.feats))
    assert loss.call_count == 0
    assert torch.equal(extras['teacher_logits'], full.logits)


def test_saliency_mask_changes_the_teacher_logits_through_the_neck():
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


def test_part_cross_entropies_follow_the_labels_of_their_images():
    # eval mode: BatchNorm uses running statistics, so one part image can be
    # re-run alone and give the same logits as in the batched pass.
    model = build(teacher=None, distill=None, fusion_head=None).eval()
    labels = [2, 0, 3]
    torch.manual_seed(0)
    inputs = torch.randn(3, 3, SIZE, SIZE)
    samples = [DataSample().set_gt_label(label) for label in labels]
    captured = {}
    model.backbone.register_forward_hook(
        lambda module, args, output: captured.setdefault('backbone_inputs', []).append(
            args[0].detach()))
    sppn_loss = model.sppn_head.loss

    def record_loss(boxes, scores, part_ce, object_area):
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


@pytest.mark.parametrize('overrides, message', [
    (dict(sppn_head=None), 'sppn_neck and sppn_head must be set together'),
    (dict(teacher=None), 'distill needs a teacher'),
    (dict(part_images=dict(blur=3)), "bad part_images config .*unexpected keyword argument 'blur'"),
    (dict(loss_weights=dict(studnet=1.0)), "unknown loss_weights keys \\['studnet'\\]"),
])
def test_bad_configs_fail_with_clear_messages(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)


@pytest.mark.parametrize('overrides', [
    dict(),  # proposals ranked by their windows
    dict(proposal_rank_ce='part_image'),  # by their part images
    dict(rank_target='occlusion', single_box_crop=0, proposal_rank_ce='part_image'),
])
def test_a_step_without_samples_runs_no_ranking_pass(overrides):
    sppn_head = tiny_daf_cfg().sppn_head
    sppn_head.rank_interval = 2
    model = build(teacher=None, distill=None, fusion_head=None, sppn_head=sppn_head,
                  **overrides)
    data = batch(batch_size=3)
    input_shapes = []
    model.backbone.register_forward_hook(
        lambda module, args, output: input_shapes.append(tuple(args[0].shape)))
    model(**data, mode='loss')  # step 1 of 2 draws and ranks the samples
    assert input_shapes[0] == (3, 3, SIZE, SIZE) and len(input_shapes) > 1
    input_shapes.clear()
    losses = model(**data, mode='loss')  # step 2: no samples, no ranking
    assert input_shapes == [(3, 3, SIZE, SIZE)]
    assert model.part_pass_needed(sampling=False) is False
    assert losses['loss_rank'].item() == 0.0
    assert losses['loss_overlap'].item() > 0.0


def test_sppn_loss_without_a_ranking_target_only_on_a_step_that_ranks_nothing():
    model = build(teacher=None, distill=None, fusion_head=None)
    head = model.sppn_head
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]])
    scores = torch.tensor([[0.5, 0.1]], requires_grad=True)
    area = torch.tensor([400.0])
    with pytest.raises(ValueError, match='part_ce is None, but this step ranks the boxes '
                       r'\(rank_interval=1, samples not given\)'):
        head.loss(boxes, scores, None, area)
    head.rank_interval = 2
    assert head.loss(boxes, scores, None, area)['loss_rank'].item() == 0.0


CLEAN_RANK = dict(rank_target='clean_features', single_box_crop=0,
                  proposal_rank_ce='part_image')


def test_clean_feature_ranking_runs_one_backbone_pass():
    model = build(teacher=None, distill=None, fusion_head=None, **CLEAN_RANK)
    assert model.part_pass_needed(sampling=True) is False
    assert model.part_pass_needed(sampling=False) is False
    data = batch(batch_size=3)
    # No part images, no windows: the clean pass is the only one.
    assert _backbone_batch_shapes(model, data) == [(3, 3, SIZE, SIZE)]
    with_con = build(teacher=None, distill=None, fusion_head=None, **CLEAN_RANK, **WITH_CON)
    assert with_con.part_pass_needed(sampling=True) is True


OCCLUSION = dict(rank_target='occlusion', single_box_crop=0, proposal_rank_ce='part_image')


def test_occlusion_ranking_runs_the_clean_pass_and_one_hidden_copy_per_box():
    model = build(teacher=None, distill=None, fusion_head=None, **OCCLUSION)
    assert model.part_pass_needed(sampling=True) is False
    data = batch(batch_size=3)
    num_boxes = model.sppn_head.num_parts + model.sppn_head.rank_samples
    assert _backbone_batch_shapes(model, data) == [(3, 3, SIZE, SIZE),
                                                   (3 * num_boxes, 3, SIZE, SIZE)]


def test_occlusion_targets_are_the_negative_ce_of_the_image_without_each_box():
    from mmdaf.models.utils.part_images import occluded_images
    model = build(teacher=None, distill=None, fusion_head=None, **OCCLUSION).eval()
    data = batch(batch_size=2)
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        student = model.run_student(data['inputs'])
    proposals = torch.tensor([[[0., 0., 16., 16.], [16., 16., 48., 48.]]] * 2)
    samples = torch.tensor([[[40., 0., 64., 20.]]] * 2)
    student = student._replace(boxes=proposals, sample_boxes=samples)
    proposal_target, sample_target = model.occlusion_ce(data['inputs'], student, labels)
    with torch.no_grad():
        for k, box in enumerate([proposals[:, 0], proposals[:, 1], samples[:, 0]]):
            hidden = occluded_images(data['inputs'], box[:, None])
            logits = model.student_logits(model.backbone(hidden))
            expected = -torch.nn.functional.cross_entropy(logits, labels, reduction='none')
            got = proposal_target[:, k] if k < 2 else sample_target[:, 0]
            torch.testing.assert_close(got, expected)
    # Hiding a quarter of the image changes the loss: the targets differ.
    assert not torch.allclose(proposal_target[:, 0], proposal_target[:, 1])
    alone, none = model.occlusion_ce(data['inputs'], student._replace(sample_boxes=None),
                                     labels)
    assert none is None
    torch.testing.assert_close(alone, proposal_target)


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


def test_clean_feature_ce_is_the_head_on_the_cells_under_each_box():
    model = build(teacher=None, distill=None, fusion_head=None, **CLEAN_RANK).train()
    data = batch(batch_size=2)
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        student = model.run_student(data['inputs'])
    c5 = student.feats[-1]
    cell = SIZE // c5.shape[-1]  # stride 16 at 64 px: a 4 x 4 map
    assert c5.shape[-2:] == (4, 4)

    # Per image: proposals on cells (0, 0) and (2, 3), one sample on (3, 1).
    student = student._replace(boxes=_cell_boxes(cell, [(0, 0), (2, 3)]),
                               sample_boxes=_cell_boxes(cell, [(3, 1)]))
    proposal_ce, sample_ce = model.clean_feature_ce(student, labels, (SIZE, SIZE))
    assert proposal_ce.shape == (2, 2) and sample_ce.shape == (2, 1)
    for (row, col), ce in (((0, 0), proposal_ce[:, 0]), ((2, 3), proposal_ce[:, 1]),
                           ((3, 1), sample_ce[:, 0])):
        logits = model.head((c5[:, :, row, col], ))
        expected = torch.nn.functional.cross_entropy(logits, labels, reduction='none')
        torch.testing.assert_close(ce, expected)
    # A step without samples ranks the proposals alone.
    no_samples = student._replace(sample_boxes=None)
    alone, none = model.clean_feature_ce(no_samples, labels, (SIZE, SIZE))
    assert none is None
    torch.testing.assert_close(alone, proposal_ce)


@pytest.mark.parametrize('options, method', [(CLEAN_RANK, 'clean_feature_ce'),
                                             (OCCLUSION, 'occlusion_ce')])
def test_ranking_targets_feed_the_sppn_ranking_loss(options, method):
    model = build(teacher=None, distill=None, fusion_head=None, **options)
    seen = {}
    original_loss = model.sppn_head.loss

    def recording_loss(boxes, scores, part_ce, area, **samples):
        seen['part_ce'], seen['sample_ce'] = part_ce, samples.get('sample_ce')
        return original_loss(boxes, scores, part_ce, area, **samples)

    with patch.object(model, method, _recording(getattr(model, method), seen, 'ce')), \
            patch.object(model.sppn_head, 'loss', recording_loss):
        model(**batch(), mode='loss')
    assert seen['part_ce'] is seen['ce'][0]
    assert seen['sample_ce'] is seen['ce'][1]
    assert seen['sample_ce'].shape == (2, model.sppn_head.rank_samples)
    if method == 'occlusion_ce':
        assert (seen['part_ce'] <= 0).all()


@pytest.mark.parametrize('overrides, message', [
    (dict(rank_target='windows'), "rank_target must be one of .* got 'windows'"),
    (dict(rank_target='clean_features'), 'set single_box_crop=0 .* got single_box_crop=24'),
    (dict(rank_target='clean_features', single_box_crop=0),
     "proposal_rank_ce='window'"),
    (dict(rank_target='occlusion'), "rank_target='occlusion' .* got single_box_crop=24"),
])
def test_rank_target_errors_name_the_conflicting_option(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)


def test_rank_context_averages_each_window_with_the_image_logits():
    model = build(teacher=None, distill=None, fusion_head=None).eval()
    data = batch(batch_size=2)
    labels = torch.tensor([0, 3])
    boxes = torch.tensor([[[0., 0., 12., 12.], [30., 20., 44., 30.]],
                          [[10., 40., 20., 54.], [50., 50., 62., 60.]]])
    context = torch.tensor([[3., 0., 0., -1.], [0., 0., 2., 0.]])
    with torch.no_grad():
        windows = model.part_image_generator.single_box_windows(data['inputs'], boxes,
                                                                model.single_box_crop)
        window_logits = model.student_logits(model.backbone(windows)).view(2, 2, -1)
        alone = model.single_box_ce(data['inputs'], boxes, labels)
        joined = model.single_box_ce(data['inputs'], boxes, labels, context_logits=context)
    expected_alone = -window_logits.log_softmax(-1)[[0, 0, 1, 1], [0, 1, 0, 1],
                                                    [0, 0, 3, 3]].view(2, 2)
    mean_logits = (window_logits + context[:, None]) / 2
    expected_joined = -mean_logits.log_softmax(-1)[[0, 0, 1, 1], [0, 1, 0, 1],
                                                   [0, 0, 3, 3]].view(2, 2)
    torch.testing.assert_close(alone, expected_alone)
    torch.testing.assert_close(joined, expected_joined)
    assert not torch.allclose(alone, joined)


@pytest.mark.parametrize('rank_context', ['none', 'image'])
def test_rank_context_passes_the_detached_image_logits_to_the_windows(rank_context):
    model = build(teacher=None, distill=None, fusion_head=None, rank_context=rank_context)
    seen = {}
    original = model.single_box_ce

    def recording(*args, **kwargs):
        seen['context'] = kwargs.get('context_logits')
        return original(*args, **kwargs)

    with patch.object(model, 'run_student', _recording(model.run_student, seen, 'student')), \
            patch.object(model, 'single_box_ce', recording):
        model(**batch(), mode='loss')
    if rank_context == 'none':
        assert seen['context'] is None
    else:
        assert not seen['context'].requires_grad
        torch.testing.assert_close(seen['context'], seen['student'].logits.detach())


@pytest.mark.parametrize('overrides, message', [
    (dict(rank_context='boxes'), "rank_context must be one of .* got 'boxes'"),
    (dict(rank_context='image', single_box_crop=0), 'got single_box_crop=0'),
    (dict(rank_context='image', proposal_rank_ce='part_image'),
     "proposal_rank_ce='part_image'"),
])
def test_rank_context_errors_name_the_conflicting_option(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)


WINDOWS = dict(teacher=None, distill=None, fusion_head=None,
               window_loss=dict(loss_weight=0.5))


def _two_boxes_each():
    proposals = torch.tensor([[[0., 0., 12., 12.], [30., 20., 44., 30.]],
                              [[10., 40., 20., 54.], [50., 50., 62., 60.]]])
    samples = torch.tensor([[[20., 20., 30., 30.]], [[5., 30., 17., 40.]]])
    return proposals, samples


@pytest.mark.parametrize('rank_context', ['none', 'image'])
def test_trained_windows_rank_as_the_no_grad_windows_and_train_the_backbone(rank_context):
    model = build(rank_context=rank_context, **WINDOWS).train()
    data = batch(batch_size=2)
    labels = torch.tensor([0, 3])
    proposals, samples = _two_boxes_each()
    image_logits = torch.tensor([[3., 0., 0., -1.], [0., 0., 2., 0.]])
    proposal_ce, sample_ce, window_ce = model.trained_window_ce(
        data['inputs'], proposals, samples, labels, None, image_logits)
    expected_proposal, expected_sample = model.ranked_sample_ce(
        data['inputs'], proposals, samples, labels, None, image_logits=image_logits)
    torch.testing.assert_close(proposal_ce, expected_proposal)
    torch.testing.assert_close(sample_ce, expected_sample)
    assert not proposal_ce.requires_grad and not sample_ce.requires_grad
    # The loss is the windows' own cross entropy, without the image's logits.
    alone = model.single_box_ce(data['inputs'], torch.cat([proposals, samples], dim=1),
                                labels)
    torch.testing.assert_close(window_ce.detach(), alone.mean())
    window_ce.backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.head.fc.weight.grad.abs().sum() > 0


def test_window_loss_is_scaled_like_the_part_losses():
    model = build(**WINDOWS)
    seen = {}
    with patch.object(model, 'trained_window_ce',
                      _recording(model.trained_window_ce, seen, 'windows')):
        model.part_loss_scale = 0.25
        losses = model(**batch(), mode='loss')
    torch.testing.assert_close(losses['loss_window'], 0.25 * 0.5 * seen['windows'][2])
    assert 'loss_window' not in build(teacher=None, distill=None,
                                      fusion_head=None)(**batch(), mode='loss')


@pytest.mark.parametrize('overrides, message', [
    (dict(window_loss=dict(weight=1.0)), r"unknown window_loss keys \['weight'\]"),
    (dict(window_loss=dict(), single_box_crop=0), 'got single_box_crop=0'),
    (dict(window_loss=dict(), proposal_rank_ce='part_image'),
     "proposal_rank_ce='part_image'"),
])
def test_window_loss_errors_name_the_conflicting_option(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)


def test_window_loss_needs_sampled_anchors():
    cfg = tiny_daf_cfg(window_loss=dict())
    cfg.sppn_head.rank_samples = 0
    with pytest.raises(ValueError, match='rank_samples=0'):
        MODELS.build(cfg)


POOL = dict(part_pool=dict(top_m=2, loss_weight=0.5))


def test_part_pool_logits_are_the_head_on_the_top_m_proposal_cells():
    model = build(teacher=None, distill=None, fusion_head=None, **POOL).eval()
    data = batch(batch_size=2)
    with torch.no_grad():
        student = model.run_student(data['inputs'])
        c5 = student.feats[-1]
        cell = SIZE // c5.shape[-1]
        # Four proposals; only the first two (the top M = 2) are pooled.
        student = student._replace(boxes=_cell_boxes(cell, [(1, 2), (3, 0), (0, 0), (2, 2)]))
        pooled = model.part_pool_logits(student, (SIZE, SIZE))
    assert pooled.shape == (2, 2, NUM_CLASSES)
    torch.testing.assert_close(pooled[:, 0], model.head((c5[:, :, 1, 2], )))
    torch.testing.assert_close(pooled[:, 1], model.head((c5[:, :, 3, 0], )))


def test_part_pool_loss_trains_the_backbone_but_not_the_proposals():
    model = build(teacher=None, distill=None, fusion_head=None, **POOL)
    seen = {}
    with patch.object(model, 'part_pool_logits',
                      _recording(model.part_pool_logits, seen, 'logits')):
        losses = model(**batch(), mode='loss')
    labels = torch.tensor([0, 1])
    expected = 0.5 * torch.nn.functional.cross_entropy(
        seen['logits'].flatten(0, 1), labels.repeat_interleave(2))
    torch.testing.assert_close(losses['loss_part_pool'], expected)
    losses['loss_part_pool'].backward()
    assert model.backbone.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert model.head.fc.weight.grad.abs().sum() > 0
    # The boxes are detached: no gradient into the SPPN.
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0
               for p in model.sppn_head.parameters())


def test_part_pool_warmup_scales_the_pooled_loss_like_the_part_losses():
    losses = {}
    for warmup in (False, True):
        model = build(teacher=None, distill=None, fusion_head=None,
                      part_pool=dict(top_m=2, loss_weight=0.5, warmup=warmup))
        model.part_loss_scale = 0.25
        torch.manual_seed(1)
        losses[warmup] = model(**batch(), mode='loss')
    torch.testing.assert_close(losses[True]['loss_part_pool'],
                               0.25 * losses[False]['loss_part_pool'])
    torch.testing.assert_close(losses[True]['loss_rank'], losses[False]['loss_rank'])


def test_part_pool_prediction_averages_image_and_pooled_logits():
    model = build(teacher=None, distill=None, fusion_head=None, **POOL).eval()
    inputs = batch()['inputs']
    with torch.no_grad():
        logits, extras = model.predict_logits(inputs)
        student = model.run_student(inputs)
        pooled = model.part_pool_logits(student, (SIZE, SIZE))
    expected = torch.cat([student.logits[:, None], pooled], dim=1).mean(dim=1)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(extras['student_logits'], expected)
    model.part_pool['predict'] = False
    with torch.no_grad():
        torch.testing.assert_close(model.predict_logits(inputs)[0], student.logits)


def test_random_part_pool_boxes_keep_their_sizes_inside_the_image():
    from mmdaf.models.classifiers.daf_classifier import move_boxes_at_random
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


def test_random_part_pool_predictions_repeat_in_eval_mode():
    model = build(teacher=None, distill=None, fusion_head=None,
                  part_pool=dict(top_m=2, boxes='random')).eval()
    inputs = batch()['inputs']
    with torch.no_grad():
        student = model.run_student(inputs)
        first = model.part_pool_logits(student, (SIZE, SIZE))
        torch.rand(5)  # the global generator moves; the eval draw does not
        again = model.part_pool_logits(student, (SIZE, SIZE))
        model.train()
        trained = [model.part_pool_logits(student, (SIZE, SIZE)) for _ in range(2)]
    torch.testing.assert_close(first, again)
    # In training every step draws new positions.
    assert not torch.allclose(trained[0], trained[1])


def test_ground_truth_part_pool_pools_every_given_part_in_loss_and_prediction():
    model = build(teacher=None, distill=None, fusion_head=None,
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
    torch.testing.assert_close(
        losses['loss_part_pool'],
        0.5 * torch.nn.functional.cross_entropy(pooled.flatten(0, 1), labels))


def test_ground_truth_part_pool_without_part_boxes_says_how_to_load_them():
    model = build(teacher=None, distill=None, fusion_head=None,
                  part_pool=dict(boxes='ground_truth')).eval()
    data = batch()
    with pytest.raises(ValueError, match=r"need gt_bboxes on every data sample: load them "
                       r'with SyntheticFGVC\(with_part_boxes=True\)'):
        model.predict(data['inputs'], data['data_samples'])
    data['data_samples'][0].set_field(torch.zeros(3, 4), 'gt_bboxes')
    data['data_samples'][1].set_field(torch.zeros(2, 4), 'gt_bboxes')
    with pytest.raises(ValueError, match=r'same P in every sample, got shapes '
                       r'\[\(2, 4\), \(3, 4\)\]'):
        model.loss(data['inputs'], data['data_samples'])


def test_ground_truth_teacher_mask_is_the_union_of_the_given_regions():
    model = build(teacher_mask_boxes='ground_truth').eval()
    data = batch(batch_size=2)
    regions = [torch.tensor([[0.0, 0.0, 8.0, 8.0], [40.0, 40.0, 48.0, 56.0]]),
               torch.tensor([[16.0, 8.0, 32.0, 16.0], [16.0, 8.0, 32.0, 16.0]])]
    for sample, image_regions in zip(data['data_samples'], regions):
        sample.set_field(image_regions, 'gt_bboxes')
    with torch.no_grad():
        student = model.run_student(data['inputs'])
        teacher_in, saliency = model.teacher_input(data['inputs'], student,
                                                   data['data_samples'])
    assert saliency.shape == (2, 1, SIZE, SIZE)
    # 64 + 128 pixels in image 0's two regions; image 1's region twice, 128.
    assert saliency[0].sum().item() == 64 + 128 and saliency[1].sum().item() == 128
    assert saliency[0, 0, 4, 4] == 1 and saliency[0, 0, 50, 44] == 1
    assert saliency[0, 0, 20, 20] == 0 and saliency[1, 0, 10, 20] == 1
    torch.testing.assert_close(teacher_in[:, 4:], saliency)
    # The proposals no longer reach the teacher: the same prediction whatever they are.
    with torch.no_grad():
        first = model.predict_logits(data['inputs'], data['data_samples'])[1]
        model.sppn_head.score_tower[0].weight.data.normal_()
        second = model.predict_logits(data['inputs'], data['data_samples'])[1]
    torch.testing.assert_close(first['teacher_logits'], second['teacher_logits'])


@pytest.mark.parametrize('overrides, message', [
    (dict(teacher_mask_boxes='gt'), "teacher_mask_boxes must be one of .* got 'gt'"),
    (dict(teacher=None, distill=None, fusion_head=None, teacher_mask_boxes='ground_truth'),
     "teacher_mask_boxes='ground_truth' needs a teacher"),
])
def test_teacher_mask_boxes_errors_name_the_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)


@pytest.mark.parametrize('part_pool, message', [
    (dict(top_k=3), r"unknown part_pool keys \['top_k'\]"),
    (dict(top_m=0), 'part_pool.top_m must be >= 1, got 0'),
    (dict(boxes='centre'), "part_pool.boxes must be one of .* got 'centre'"),
])
def test_part_pool_errors_name_the_key(part_pool, message):
    with pytest.raises(ValueError, match=message):
        build(part_pool=part_pool)


def test_part_pool_samples_train_the_pooled_loss_at_the_sampled_anchors():
    model = build(teacher=None, distill=None, fusion_head=None,
                  part_pool=dict(top_m=2, loss_weight=0.5, samples=True))
    seen = {}
    with patch.object(model, 'run_student', _recording(model.run_student, seen, 'student')):
        losses = model(**batch(), mode='loss')
    student = seen['student']
    num_samples = model.sppn_head.rank_samples
    assert student.sample_boxes.shape == (2, num_samples, 4)
    with torch.no_grad():
        sample_logits = model.box_logits(student.feats[-1], student.sample_boxes, (SIZE, SIZE))
    expected = 0.5 * torch.nn.functional.cross_entropy(
        sample_logits.flatten(0, 1), torch.tensor([0, 1]).repeat_interleave(num_samples))
    torch.testing.assert_close(losses['loss_part_pool_samples'], expected)
    losses['loss_part_pool_samples'].backward()
    assert model.backbone.layer4[0].conv1.weight.grad.abs().sum() > 0
    # The sampled boxes are detached: no gradient into the SPPN's scores.
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0
               for p in model.sppn_head.parameters())
    # Off by default: no such loss.
    plain = build(teacher=None, distill=None, fusion_head=None, **POOL)
    assert 'loss_part_pool_samples' not in plain(**batch(), mode='loss')


def test_part_pool_samples_need_sampled_anchors():
    cfg = tiny_daf_cfg(teacher=None, distill=None, fusion_head=None,
                       part_pool=dict(samples=True))
    cfg.sppn_head.rank_samples = 0
    with pytest.raises(ValueError, match=r"part_pool.samples trains the pooled cross "
                       r"entropy at the SPPN's sampled anchors; set sppn_head.rank_samples "
                       r"> 0, got rank_samples=0"):
        MODELS.build(cfg)


def test_part_pool_samples_add_to_random_boxes_too():
    model = build(teacher=None, distill=None, fusion_head=None,
                  part_pool=dict(boxes='random', samples=True))
    losses = model(**batch(), mode='loss')
    assert {'loss_part_pool', 'loss_part_pool_samples'} <= set(losses)


def test_part_pool_needs_the_sppn():
    with pytest.raises(ValueError, match='part_pool needs the SPPN'):
        build(sppn_neck=None, sppn_head=None, location_heatmap=None, teacher=None,
              distill=None, fusion_head=None, part_pool=dict())


CONSISTENCY = dict(rank_target='consistency', single_box_crop=0,
                   proposal_rank_ce='part_image')


def test_consistency_ranking_runs_one_backbone_pass():
    model = build(teacher=None, distill=None, fusion_head=None, **CONSISTENCY)
    assert model.part_pass_needed(sampling=True) is False
    assert _backbone_batch_shapes(model, batch(batch_size=3)) == [(3, 3, SIZE, SIZE)]


def test_consistency_targets_are_the_negative_cross_image_similarity_on_c3():
    from mmdaf.models.utils.part_consistency import cross_image_box_similarity
    model = build(teacher=None, distill=None, fusion_head=None, **CONSISTENCY).train()
    data = batch(batch_size=3)
    with torch.no_grad():
        student = model.run_student(data['inputs'])
    c3 = student.feats[0]
    assert c3.shape[-2:] == (8, 8)  # stride 8: the part-sized anchors' stride
    proposals = _cell_boxes(8, [(0, 0), (2, 3)]).repeat(2, 1, 1)[:3]
    samples = _cell_boxes(8, [(5, 1)]).repeat(2, 1, 1)[:3]
    student = student._replace(boxes=proposals, sample_boxes=samples)
    proposal_target, sample_target = model.consistency_target(student, (SIZE, SIZE))
    expected = -cross_image_box_similarity(c3, torch.cat([proposals, samples], dim=1),
                                           (SIZE, SIZE), student.object_mask)
    torch.testing.assert_close(proposal_target, expected[:, :2])
    torch.testing.assert_close(sample_target, expected[:, 2:])
    # The object mask counts: without it the targets change.
    unmasked = model.consistency_target(student._replace(object_mask=None), (SIZE, SIZE))[0]
    assert not torch.allclose(unmasked, proposal_target)
    alone, none = model.consistency_target(student._replace(sample_boxes=None),
                                           (SIZE, SIZE))
    assert none is None
    torch.testing.assert_close(alone, proposal_target)


OBJECT_POOL = dict(part_pool=dict(boxes='object', loss_weight=0.5))


def pooled_student(part_pool: dict):
    """A student-only model with ``part_pool`` in eval mode, on a batch of
    2 (labels 0 and 1): its prediction, student pass, pooled logits and
    losses."""
    model = build(teacher=None, distill=None, fusion_head=None,
                  part_pool=part_pool).eval()
    data = batch(batch_size=2)
    with torch.no_grad():
        logits, _ = model.predict_logits(data['inputs'])
        student = model.run_student(data['inputs'])
        pooled = model.part_pool_logits(student, (SIZE, SIZE))
        losses = model.loss(data['inputs'], data['data_samples'])
    return model, logits, student, pooled, losses


def test_object_part_pool_is_the_head_on_the_last_stage_over_the_object_mask():
    from mmdaf.models.utils.box_pooling import mask_pooled_features
    model, logits, student, pooled, losses = pooled_student(OBJECT_POOL['part_pool'])
    assert pooled.shape == (2, 1, NUM_CLASSES)
    # The heatmap's mask is at stride 8, the last stage at 16: area weights.
    assert student.object_mask.shape[-2:] == (8, 8)
    expected = model.head((mask_pooled_features(student.feats[-1], student.object_mask), ))
    torch.testing.assert_close(pooled[:, 0], expected)
    torch.testing.assert_close(logits, (student.logits + expected) / 2)
    torch.testing.assert_close(losses['loss_part_pool'], 0.5 * torch.nn.functional.cross_entropy(
        expected, torch.tensor([0, 1])))


def test_object_part_pool_needs_the_heatmap_but_not_the_sppn():
    with pytest.raises(ValueError, match="part_pool.boxes='object' pools over the location "
                       "heatmap's object mask; location_heatmap is None"):
        build(location_heatmap=None, teacher=None, distill=None, fusion_head=None,
              **OBJECT_POOL)
    model = build(sppn_neck=None, sppn_head=None, teacher=None, distill=None,
                  fusion_head=None, **OBJECT_POOL)
    losses = model(**batch(), mode='loss')
    assert {name for name in losses if name.startswith('loss')} == {'loss_pred',
                                                                    'loss_part_pool'}


def test_proposals_and_object_pool_is_the_top_m_boxes_then_the_object_mask():
    from mmdaf.models.utils.box_pooling import box_pooled_features, mask_pooled_features
    model, logits, student, pooled, losses = pooled_student(
        dict(boxes='proposals_and_object', top_m=2, loss_weight=0.5))
    assert pooled.shape == (2, 3, NUM_CLASSES)
    feat = student.feats[-1]
    boxes = box_pooled_features(feat, student.boxes[:, :2], (SIZE, SIZE))
    expected_boxes = model.head((boxes.flatten(0, 1), )).view(2, 2, NUM_CLASSES)
    expected_object = model.head((mask_pooled_features(feat, student.object_mask), ))
    torch.testing.assert_close(pooled[:, :2], expected_boxes)
    torch.testing.assert_close(pooled[:, 2], expected_object)
    # The prediction: the mean of the image's logits and the three pooled ones.
    expected_prediction = (student.logits + expected_boxes.sum(1) + expected_object) / 4
    torch.testing.assert_close(logits, expected_prediction)
    # One cross entropy over the 2 x 3 pooled logits, labels 0 and 1.
    expected_ce = torch.nn.functional.cross_entropy(
        pooled.flatten(0, 1), torch.tensor([0, 0, 0, 1, 1, 1]))
    torch.testing.assert_close(losses['loss_part_pool'], 0.5 * expected_ce)


def test_proposals_and_object_pool_needs_the_heatmap_and_the_sppn():
    both = dict(part_pool=dict(boxes='proposals_and_object'))
    with pytest.raises(ValueError, match="part_pool.boxes='proposals_and_object' pools over "
                       "the location heatmap's object mask; location_heatmap is None"):
        build(location_heatmap=None, teacher=None, distill=None, fusion_head=None, **both)
    with pytest.raises(ValueError, match=r'part_pool needs the SPPN \(sppn_head=None\)'):
        build(sppn_neck=None, sppn_head=None, teacher=None, distill=None,
              fusion_head=None, **both)


def test_fusion_is_trained_on_the_student_prediction_it_gets_at_test_time():
    model = build(**OBJECT_POOL)
    data = batch(batch_size=2)
    fused_inputs = []
    model.fusion_head.register_forward_hook(
        lambda module, args, output: fused_inputs.append(args[0][0].detach()))
    seen = {}
    with patch.object(model, 'part_pool_logits',
                      _recording(model.part_pool_logits, seen, 'pooled')), \
            patch.object(model, 'run_student',
                         _recording(model.run_student, seen, 'student')):
        model(**data, mode='loss')
    expected = (seen['student'].logits + seen['pooled'][:, 0]) / 2
    torch.testing.assert_close(fused_inputs[0], expected.detach())
    # Without part_pool.predict the fusion gets the image's logits alone.
    model.part_pool['predict'] = False
    fused_inputs.clear()
    with patch.object(model, 'run_student', _recording(model.run_student, seen, 'student')):
        model(**data, mode='loss')
    torch.testing.assert_close(fused_inputs[0], seen['student'].logits.detach())
