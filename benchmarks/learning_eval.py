"""Evaluation of one final checkpoint for ``benchmarks/learning.py``.

Run in its own process (``learning.py --evaluate``, started by
:func:`benchmarks.learning_runs.evaluate_run`): accuracies of the prediction
and of each stream on the test split, the training split's top-1, the part hit
rates of the SPPN proposals, the different parts their top 4 cover
(``PartCoverage``) and statistics of their scores and boxes. With
``--curves``, :func:`evaluate_epoch_curves` measures only the test and
training-split top-1 of every epoch's checkpoint.
"""
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks.common import (
    build_test_loader,
    load_trained_model,
    read_image_ids,
    read_part_boxes,
)
from benchmarks.learning_metrics import accuracies, hit_rates, touches_border

# Proposals per image whose covered parts are counted (``PartCoverage``'s top_n).
COVERAGE_TOP_N = 4
# What the coverage adds to a run's evaluation (None without proposals).
COVERAGE_KEYS = ('parts_covered', 'parts_covered_random', 'num_parts')
# The metainfo of a data sample that ``PartCoverage`` reads besides its boxes.
COVERAGE_METAINFO = ('img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                     'flip_direction')


def predicted_samples(model, loader) -> Iterator:
    """Yield the model's predicted DataSample of every image of ``loader``."""
    import torch

    with torch.no_grad():
        for data in loader:
            data = model.data_preprocessor(data, False)
            yield from model(**data, mode='predict')


@dataclass
class TestPredictions:
    """What the model predicted on the test split, image by image."""

    preds: List[int] = field(default_factory=list)
    student_preds: List[int] = field(default_factory=list)
    teacher_preds: List[int] = field(default_factory=list)
    gts: List[int] = field(default_factory=list)
    scores: List[np.ndarray] = field(default_factory=list)
    # Per image id: the proposed part boxes and the image's (H, W).
    boxes_per_image: Dict[int, np.ndarray] = field(default_factory=dict)
    img_shapes: Dict[int, Tuple[int, int]] = field(default_factory=dict)
    # Per proposed box: its |score| and whether it touches the image border.
    abs_scores: List[float] = field(default_factory=list)
    border_boxes: List[bool] = field(default_factory=list)
    # Per image with proposals: what ``PartCoverage`` reads of its data sample.
    coverage_samples: List[dict] = field(default_factory=list)


def evaluate_checkpoint(config_file: str, checkpoint: str, data_root: str,
                        num_classes: int, random_draws: int,
                        scores_out: Optional[str] = None) -> dict:
    """Accuracies and part hit rates of one checkpoint on the test split.

    Args:
        config_file (str): the config the Runner dumped into the run's work
            dir (with the run's ``--cfg-options`` applied), or that work dir.
        checkpoint (str): the final checkpoint.
        data_root (str): the synthetic set.
        num_classes (int): the number of classes.
        random_draws (int): random boxes per proposed box.
        scores_out (str, optional): a ``.npz`` path that keeps the (N, K)
            prediction scores and the N labels of the test split, for the
            two-network ensemble row.

    Returns:
        dict: top-1 and mean per-class accuracy, the streams' and the training
        split's top-1, and for a model with an SPPN the hit rates, the part
        coverage (:func:`part_coverage`) and the scores' and boxes' statistics
        (None without one).
    """
    cfg, model = load_trained_model(_dumped_config(config_file), checkpoint)
    loader = build_test_loader(cfg, data_root)
    predictions = predict_test_split(model, loader, data_root)
    gts = predictions.gts
    result = dict(checkpoint=checkpoint, num_test=len(gts),
                  **accuracies(predictions.preds, gts, num_classes))
    result.update(train_split_accuracy(cfg, model, data_root, num_classes))
    result['student_top1'] = (accuracies(predictions.student_preds, gts,
                                         num_classes)['top1']
                              if predictions.student_preds else None)
    result['teacher_top1'] = (accuracies(predictions.teacher_preds, gts,
                                         num_classes)['top1']
                              if predictions.teacher_preds else None)
    result['student_image_top1'] = student_image_top1(model, loader, gts, num_classes,
                                                      result['student_top1'])
    if scores_out:
        np.savez_compressed(scores_out, scores=np.stack(predictions.scores),
                            labels=np.array(gts))
        result['scores_file'] = scores_out
    result.update(part_box_statistics(predictions, data_root, random_draws))
    return result


# The accuracies measured at every epoch with --curves.
CURVE_METRICS = ('top1', 'student_top1', 'train_top1', 'student_train_top1')


def epoch_accuracies(cfg, model, data_root: str, num_classes: int) -> dict:
    """The cheap part of :func:`evaluate_checkpoint`: top-1 of the prediction
    and of the student stream (None without one) on the test split, and
    :func:`train_split_accuracy`; no hit rates, no score file."""
    predictions = predict_test_split(model, build_test_loader(cfg, data_root),
                                     data_root)
    gts = predictions.gts
    result = dict(top1=accuracies(predictions.preds, gts, num_classes)['top1'],
                  student_top1=(accuracies(predictions.student_preds, gts,
                                           num_classes)['top1']
                                if predictions.student_preds else None))
    result.update(train_split_accuracy(cfg, model, data_root, num_classes))
    return result


def evaluate_epoch_curves(config_file: str, checkpoints: Sequence[str], data_root: str,
                          num_classes: int) -> dict:
    """:func:`epoch_accuracies` of every epoch's checkpoint (``--curves``).

    Args:
        config_file (str): the config the Runner dumped into the run's work
            dir, or that work dir.
        checkpoints (list[str]): the checkpoints, first epoch to final
            (``epoch_<k>.pth``).
        data_root (str): the synthetic set.
        num_classes (int): the number of classes.

    Returns:
        dict: ``epochs`` (the epoch of each checkpoint) and per metric of
        :data:`CURVE_METRICS` its value at each epoch (None for a stream the
        model does not have).
    """
    curves = dict(epochs=[], checkpoints=list(checkpoints),
                  **{metric: [] for metric in CURVE_METRICS})
    for checkpoint in checkpoints:
        match = re.search(r'epoch_(\d+)\.pth$', checkpoint)
        curves['epochs'].append(int(match.group(1)) if match else None)
        cfg, model = load_trained_model(_dumped_config(config_file), checkpoint)
        result = epoch_accuracies(cfg, model, data_root, num_classes)
        for metric in CURVE_METRICS:
            curves[metric].append(result[metric])
    for metric in CURVE_METRICS:
        if all(value is None for value in curves[metric]):
            curves[metric] = None
    return curves


def _dumped_config(config_file: str) -> str:
    """``config_file``, or for a work dir the one config the Runner dumped."""
    if osp.isdir(config_file):  # a work dir: the one config the Runner dumped
        dumped = [f for f in os.listdir(config_file) if f.endswith('.py')]
        if len(dumped) != 1:
            raise FileNotFoundError(f'{config_file}: expected one dumped config, '
                                    f'found {dumped}')
        config_file = osp.join(config_file, dumped[0])
    return config_file


def predict_test_split(model, loader, data_root: str) -> TestPredictions:
    """The model's predictions on every image of the test ``loader``."""
    image_ids = read_image_ids(data_root)
    images_dir = osp.join(data_root, 'images')
    out = TestPredictions()
    for sample in predicted_samples(model, loader):
        out.preds.append(int(sample.pred_label))
        out.gts.append(int(sample.gt_label))
        out.scores.append(sample.pred_score.float().cpu().numpy())
        if 'student_score' in sample:
            out.student_preds.append(int(sample.student_score.argmax()))
        if 'teacher_score' in sample:
            out.teacher_preds.append(int(sample.teacher_score.argmax()))
        if 'part_boxes' in sample:
            image_id = image_ids[osp.relpath(sample.img_path, images_dir)]
            out.boxes_per_image[image_id] = sample.part_boxes.cpu().numpy()
            out.img_shapes[image_id] = tuple(sample.img_shape[:2])
            out.abs_scores += sample.part_scores.abs().tolist()
            out.border_boxes += touches_border(out.boxes_per_image[image_id],
                                               out.img_shapes[image_id]).tolist()
            out.coverage_samples.append(coverage_sample(sample))
    return out


def coverage_sample(sample) -> dict:
    """The part of a predicted DataSample that ``PartCoverage`` reads: its
    ``part_boxes`` (as an array) and the metainfo that places the parts in
    the network input."""
    kept = dict(part_boxes=sample.part_boxes.detach().cpu().numpy())
    kept.update({key: sample.get(key) for key in COVERAGE_METAINFO if key in sample})
    return kept


def part_coverage(samples: Sequence[dict], data_root: str, random_draws: int,
                  top_n: int = COVERAGE_TOP_N, seed: int = 0) -> dict:
    """Different annotated parts covered by the top-N proposals of each test
    image, by the ``PartCoverage`` metric itself.

    The synthetic set's parts are its regions (``mode='regions'``: a visible
    part counts when the centre of its region in ``parts/part_boxes.txt``
    lies in one of the boxes); the random boxes keep the boxes' sizes,
    ``random_draws`` draws per image, seeded by ``seed`` and the image id.

    Args:
        samples (list[dict]): :func:`coverage_sample` of each test image with
            proposals (at least one).
        data_root (str): the synthetic set.
        random_draws (int): random redraws of the boxes of an image (the hit
            rate's ``--random-draws``).
        top_n (int): boxes counted per image, the best first.
        seed (int): seed of the random boxes.

    Returns:
        dict: :data:`COVERAGE_KEYS`: ``parts_covered`` and
        ``parts_covered_random`` (means over the images) and ``num_parts``
        (visible parts per image, their ceiling).
    """
    from mmdaf.evaluation import PartCoverage
    metric = PartCoverage(data_root, top_n=top_n, mode='regions',
                          random_draws=random_draws, seed=seed)
    metric.process(None, samples)
    metrics = metric.compute_metrics(metric.results)
    return {key: metrics[key] for key in COVERAGE_KEYS}


def part_box_statistics(predictions: TestPredictions, data_root: str,
                        random_draws: int) -> dict:
    """Hit rates, part coverage (:func:`part_coverage`), proposals per
    image, mean box size, |score| mean and max and the share of boxes on the
    border; every value None for a model without proposals.

    ``num_parts`` is the coverage's ceiling, the annotated parts per image;
    the proposals per image are ``proposals_per_image`` (evaluations written
    before the coverage kept them under ``num_parts``)."""
    boxes_per_image = predictions.boxes_per_image
    if not boxes_per_image:
        return dict(hit_rate=None, random_hit_rate=None, part_in_box_rate=None,
                    random_part_in_box_rate=None, score_abs_mean=None,
                    score_abs_max=None, border_box_rate=None,
                    **{key: None for key in COVERAGE_KEYS})
    result = hit_rates(boxes_per_image, read_part_boxes(data_root),
                       predictions.img_shapes, draws=random_draws)
    result.update(part_coverage(predictions.coverage_samples, data_root, random_draws))
    result['proposals_per_image'] = int(next(iter(boxes_per_image.values())).shape[0])
    widths = [b[:, 2] - b[:, 0] for b in boxes_per_image.values()]
    heights = [b[:, 3] - b[:, 1] for b in boxes_per_image.values()]
    result['mean_box_wh'] = [float(np.mean(widths)), float(np.mean(heights))]
    result['score_abs_mean'] = float(np.mean(predictions.abs_scores))
    result['score_abs_max'] = float(np.max(predictions.abs_scores))
    result['border_box_rate'] = float(np.mean(predictions.border_boxes))
    return result


def student_image_top1(model, loader, gts: Sequence[int], num_classes: int,
                       student_top1: Optional[float]) -> Optional[float]:
    """The student stream's top-1 from the full image alone.

    For a model whose student prediction averages in its top-M part images
    (``predict_part_top_m > 0``) or its top-M pooled proposals
    (``part_pool.predict``) the test split is predicted again without them,
    so both are measured on the same checkpoint; otherwise it is the
    student stream's top-1 already measured (None without one).
    """
    top_m = getattr(model, 'predict_part_top_m', 0)
    part_pool = getattr(model, 'part_pool', None)
    pool_predict = bool(part_pool is not None and part_pool.predict)
    if top_m == 0 and not pool_predict:
        return student_top1
    model.predict_part_top_m = 0
    if pool_predict:
        part_pool.predict = False
    try:
        preds = [int(sample.student_score.argmax())
                 for sample in predicted_samples(model, loader)]
    finally:
        model.predict_part_top_m = top_m
        if pool_predict:
            part_pool.predict = True
    return accuracies(preds, gts, num_classes)['top1']


def train_split_accuracy(cfg, model, data_root: str, num_classes: int) -> dict:
    """How well the final model fits its own training images.

    ``train_top1`` (the prediction) and ``student_train_top1`` (the student
    stream, None for a plain classifier) on the training split, read through
    the test pipeline (no augmentation). A row whose training accuracy stays
    far below the baseline's has not converged in the schedule, and its test
    accuracy says as much about the schedule as about the method.
    """
    loader = build_test_loader(cfg, data_root,
                               dataset=dict(cfg.test_dataloader.dataset, split='train',
                                            data_root=data_root))
    preds, student_preds, gts = [], [], []
    for sample in predicted_samples(model, loader):
        preds.append(int(sample.pred_label))
        gts.append(int(sample.gt_label))
        if 'student_score' in sample:
            student_preds.append(int(sample.student_score.argmax()))
    return dict(train_top1=accuracies(preds, gts, num_classes)['top1'],
                student_train_top1=(accuracies(student_preds, gts, num_classes)['top1']
                                    if student_preds else None))
