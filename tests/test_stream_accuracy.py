"""StreamAccuracy: student/teacher top-k from hand-made data samples."""
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmpretrain.registry import METRICS
from mmpretrain.structures import DataSample

from mmdaf.evaluation import StreamAccuracy

LABELS = [0, 1, 2, 1]
# Student: top-1 right on samples 0 and 1 (50 %); top-2 adds sample 2 (75 %).
STUDENT = [[0.7, 0.2, 0.1],
           [0.1, 0.8, 0.1],
           [0.6, 0.1, 0.3],
           [0.5, 0.1, 0.4]]
# Teacher: top-1 right on all but sample 3 (75 %); top-2 right everywhere.
TEACHER = [[0.5, 0.3, 0.2],
           [0.2, 0.5, 0.3],
           [0.1, 0.2, 0.7],
           [0.6, 0.3, 0.1]]
# Fused: right on samples 0, 2 and 3 (75 %).
FUSED = [[0.9, 0.05, 0.05],
         [0.5, 0.3, 0.2],
         [0.1, 0.1, 0.8],
         [0.2, 0.7, 0.1]]


def make_samples(with_student=True, with_teacher=True):
    samples = []
    for index, label in enumerate(LABELS):
        sample = DataSample().set_gt_label(label)
        sample.set_pred_score(torch.tensor(FUSED[index]))
        if with_student:
            sample.set_field(torch.tensor(STUDENT[index]), 'student_score')
        if with_teacher:
            sample.set_field(torch.tensor(TEACHER[index]), 'teacher_score')
        samples.append(sample)
    return samples


def evaluate(metrics, samples, batch_size=2):
    evaluator = Evaluator(metrics)
    for start in range(0, len(samples), batch_size):
        evaluator.process(data_samples=samples[start:start + batch_size])
    return evaluator.evaluate(len(samples))


def test_student_and_teacher_top1_next_to_fused_accuracy():
    results = evaluate([METRICS.build(dict(type='Accuracy', topk=(1, ))),
                        METRICS.build(dict(type='StreamAccuracy'))], make_samples())
    assert results == {'accuracy/top1': pytest.approx(75.0),
                       'accuracy_student/top1': pytest.approx(50.0),
                       'accuracy_teacher/top1': pytest.approx(75.0)}


def test_topk_and_prefix():
    results = evaluate([StreamAccuracy(topk=(1, 2), prefix='val')], make_samples())
    assert results == {'val/accuracy_student/top1': pytest.approx(50.0),
                       'val/accuracy_student/top2': pytest.approx(75.0),
                       'val/accuracy_teacher/top1': pytest.approx(75.0),
                       'val/accuracy_teacher/top2': pytest.approx(100.0)}


def test_absent_stream_is_skipped():
    results = evaluate([StreamAccuracy()], make_samples(with_teacher=False))
    assert results == {'accuracy_student/top1': pytest.approx(50.0)}


def test_stream_on_some_samples_only_is_an_error():
    metric = StreamAccuracy()
    samples = make_samples()
    del samples[1].teacher_score
    metric.process(None, [sample.to_dict() for sample in samples])
    with pytest.raises(ValueError, match='teacher_score is on 3 of 4 samples'):
        metric.compute_metrics(metric.results)


def test_bad_topk():
    with pytest.raises(ValueError, match='topk must be positive ints'):
        StreamAccuracy(topk=(0, ))
    metric = StreamAccuracy(topk=4)
    metric.process(None, [sample.to_dict() for sample in make_samples()])
    with pytest.raises(ValueError, match='top-4 accuracy needs at least 4 classes'):
        metric.compute_metrics(metric.results)
