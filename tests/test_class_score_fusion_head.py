import pytest
import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from mmdaf.models.heads.class_score_fusion_head import ClassScoreFusionHead


class ParentWithLinearInit(BaseModule):
    """A parent whose init_cfg would re-initialise every Linear it holds."""

    def __init__(self, head):
        super().__init__(init_cfg=dict(type='Normal', layer='Linear', std=0.5))
        self.head = head


def make_logits(num_classes=5, batch_size=3):
    torch.manual_seed(0)
    student = torch.randn(batch_size, num_classes)
    teacher = torch.randn(batch_size, num_classes)
    return student, teacher


def make_samples(labels):
    return [DataSample().set_gt_label(int(label)) for label in labels]


def test_initial_output_is_average_before_and_after_init_weights():
    student, teacher = make_logits()
    head = MODELS.build(dict(type='ClassScoreFusionHead', num_classes=5))
    assert head.fc.weight.shape == (5, 10)
    average = (student + teacher) / 2
    assert torch.allclose(head((student, teacher)), average, atol=1e-6)
    head.init_weights()
    assert torch.allclose(head((student, teacher)), average, atol=1e-6)


def test_parent_init_cfg_does_not_overwrite_average():
    student, teacher = make_logits()
    parent = ParentWithLinearInit(ClassScoreFusionHead(num_classes=5))
    parent.init_weights()
    fused = parent.head((student, teacher))
    assert torch.allclose(fused, (student + teacher) / 2, atol=1e-6)


def test_own_init_cfg_replaces_average():
    torch.manual_seed(0)
    head = ClassScoreFusionHead(
        num_classes=5, init_cfg=dict(type='Normal', layer='Linear', std=0.5))
    head.init_weights()
    assert not torch.allclose(head.fc.weight, torch.eye(5).repeat(1, 2) / 2)


def test_three_streams_average():
    torch.manual_seed(0)
    streams = tuple(torch.randn(2, 4) for _ in range(3))
    head = ClassScoreFusionHead(num_classes=4, num_streams=3)
    head.init_weights()
    expected = (streams[0] + streams[1] + streams[2]) / 3
    assert torch.allclose(head(streams), expected, atol=1e-6)


def test_loss_is_cross_entropy_of_fused_logits():
    student, teacher = make_logits()
    labels = torch.tensor([0, 3, 4])
    head = ClassScoreFusionHead(num_classes=5, cal_acc=True)
    losses = head.loss((student, teacher), make_samples(labels))
    expected = F.cross_entropy((student + teacher) / 2, labels)
    assert losses['loss'].item() == pytest.approx(expected.item(), abs=1e-6)
    assert 'accuracy_top-1' in losses


def test_loss_gradient_reaches_both_streams():
    student, teacher = make_logits()
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    head = ClassScoreFusionHead(num_classes=5)
    head.loss((student, teacher), make_samples([1, 2, 3]))['loss'].backward()
    assert student.grad.abs().sum() > 0 and teacher.grad.abs().sum() > 0


def test_predict_returns_data_samples_with_scores():
    student, teacher = make_logits()
    head = ClassScoreFusionHead(num_classes=5)
    predictions = head.predict((student, teacher))
    expected_scores = F.softmax((student + teacher) / 2, dim=1)
    assert len(predictions) == 3
    for prediction, scores in zip(predictions, expected_scores):
        assert isinstance(prediction, DataSample)
        assert torch.allclose(prediction.pred_score, scores, atol=1e-6)
        assert prediction.pred_label.item() == scores.argmax().item()
    # Given data samples are filled in place and keep their ground truth.
    samples = make_samples([0, 1, 2])
    predictions = head.predict((student, teacher), samples)
    assert predictions[0] is samples[0]
    assert predictions[2].gt_label.item() == 2


def test_bad_inputs_raise():
    student, teacher = make_logits()
    head = ClassScoreFusionHead(num_classes=5)
    with pytest.raises(ValueError, match='tuple of 2 logit tensors'):
        head((student, ))
    with pytest.raises(ValueError, match=r'shape \(B, 5\)'):
        head((student, teacher[:, :4]))
    with pytest.raises(ValueError, match='num_classes must be a positive int'):
        ClassScoreFusionHead(num_classes=0)
    with pytest.raises(ValueError, match='num_streams must be a positive int'):
        ClassScoreFusionHead(num_classes=3, num_streams=0)
