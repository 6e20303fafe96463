"""DAFClassifier: parts switched by config, losses, gradients, predictions."""
import copy

import pytest
import torch
from conftest import config_path
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

NUM_CLASSES = 4
SIZE = 64


def tiny_daf_cfg(**overrides) -> dict:
    """The synthetic R18 DAF model with 4 classes, for 64 px inputs."""
    cfg = Config.fromfile(config_path('daf_r18_synthetic.py'))
    init_default_scope('mmpretrain')
    model = copy.deepcopy(cfg.model)
    model.head.num_classes = NUM_CLASSES
    model.teacher.head.num_classes = NUM_CLASSES
    model.fusion_head.num_classes = NUM_CLASSES
    model.data_preprocessor = dict(num_classes=NUM_CLASSES)
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


STUDENT = {'loss_pred', 'loss_rank', 'loss_overlap', 'loss_area', 'loss_con'}


@pytest.mark.parametrize('overrides, expected', [
    (dict(location_heatmap=None, sppn_neck=None, sppn_head=None, teacher=None,
          distill=None, fusion_head=None), {'loss_pred'}),
    (dict(location_heatmap=None, teacher=None, distill=None, fusion_head=None), STUDENT),
    (dict(teacher=None, distill=None, fusion_head=None), STUDENT),
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


def test_part_images_go_through_backbone_in_one_batched_pass():
    model = build(teacher=None, distill=None, fusion_head=None)
    batch_sizes = []
    model.backbone.register_forward_hook(
        lambda module, args, output: batch_sizes.append(args[0].shape[0]))
    model(**batch(batch_size=3), mode='loss')
    num_parts = model.sppn_head.num_parts
    assert batch_sizes == [3, 3 * num_parts]


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
    model = build(teacher=None, distill=None, fusion_head=None)
    losses = model(**batch(), mode='loss')
    losses['loss_rank'].backward(retain_graph=True)
    assert model.sppn_head.score_conv.weight.grad.abs().sum() > 0
    assert model.sppn_head.reg_conv.weight.grad is None
    model.zero_grad()
    (losses['loss_overlap'] + losses['loss_area']).backward()
    assert model.sppn_head.reg_conv.weight.grad.abs().sum() > 0


def test_predict_returns_fused_scores_and_what_the_model_looked_at():
    model = build().eval()
    data = batch()
    with torch.no_grad():
        samples = model(**data, mode='predict')
        logits = model(data['inputs'], mode='tensor')
    num_parts = model.sppn_head.num_parts
    assert logits.shape == (2, NUM_CLASSES)
    for index, sample in enumerate(samples):
        assert torch.allclose(sample.pred_score, logits[index].softmax(0), atol=1e-6)
        assert sample.pred_label.item() == int(logits[index].argmax())
        assert sample.student_score.shape == (NUM_CLASSES, )
        assert sample.teacher_score.shape == (NUM_CLASSES, )
        assert sample.part_boxes.shape == (num_parts, 4)
        assert sample.part_scores.shape == (num_parts, )
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


def test_teacher_input_has_heatmap_and_box_mask_channels():
    model = build().eval()
    inputs = batch()['inputs']
    with torch.no_grad():
        student = model.run_student(inputs)
        teacher_input, saliency = model.teacher_input(inputs, student)
    assert teacher_input.shape == (2, 5, SIZE, SIZE)
    assert torch.equal(teacher_input[:, :3], inputs)
    assert torch.equal(teacher_input[:, 4:], saliency)
    x1, y1, x2, y2 = student.boxes[0, 0].round().int().tolist()
    if x2 > x1 + 1 and y2 > y1 + 1:
        assert saliency[0, 0, (y1 + y2) // 2, (x1 + x2) // 2] == 1


@pytest.mark.parametrize('overrides, message', [
    (dict(sppn_head=None), 'sppn_neck and sppn_head must be set together'),
    (dict(teacher=None), 'distill needs a teacher'),
    (dict(part_images=dict(blur=3)), "bad part_images config .*unexpected keyword argument 'blur'"),
    (dict(loss_weights=dict(studnet=1.0)), "unknown loss_weights keys \\['studnet'\\]"),
])
def test_bad_configs_fail_with_clear_messages(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)
