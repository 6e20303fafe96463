"""The summary table of ``benchmarks/learning.py``: rows over seeds, and the
two-network ensemble row.

Every metric of a row is summarised over its seeds (mean, sample std, min,
max); a run evaluated before a metric existed has no value for it and is left
out of that metric's summary (``n`` counts the runs that have one). The
ensemble row of a baseline is computed from its runs, with no extra training:
the top-1 of the mean softmax of two runs of other seeds, for every
pair of seeds. With ``--curves``, :func:`mean_curves` averages each row's
per-epoch accuracies over its seeds.
"""
import statistics
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks.learning_eval import COVERAGE_KEYS, CURVE_METRICS

# The row computed from the baseline's runs: the mean softmax of two
# baselines trained with different seeds (every pair of seeds), the
# compute-aware control for a two-network model. Other rows named
# '<x>_baseline' get theirs as 'two_<x>_baselines'.
ENSEMBLE_ROW = 'two_baselines'
# The metrics of a run's evaluation that the table summarises over seeds.
METRICS = ('top1', 'mean_class_acc', 'student_top1', 'student_image_top1',
           'teacher_top1', 'train_top1',
           'student_train_top1', 'hit_rate', 'random_hit_rate',
           'part_in_box_rate', 'random_part_in_box_rate', 'score_abs_mean',
           'score_abs_max', 'border_box_rate', *COVERAGE_KEYS)


def run_value(record: dict, metric: str) -> Optional[float]:
    """A run's value of a metric of :data:`METRICS`, None where it has none.

    An evaluation written before the part coverage existed has no
    ``parts_covered`` and kept the proposals per image under ``num_parts``,
    which is not the coverage's ``num_parts`` (annotated parts per image):
    none of the coverage's values is read from it.
    """
    if metric in COVERAGE_KEYS and 'parts_covered' not in record:
        return None
    return record.get(metric)


def summarise(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """mean, sample std (None for one value), min, max, n."""
    values = [v for v in values if v is not None]
    if not values:
        return dict(mean=None, std=None, min=None, max=None, n=0)
    return dict(mean=statistics.mean(values),
                std=statistics.stdev(values) if len(values) > 1 else None,
                min=min(values), max=max(values), n=len(values))


def ensemble_row_name(name: str) -> Optional[str]:
    """'baseline' -> 'two_baselines', 'x_baseline' -> 'two_x_baselines'; None
    for rows that are not baselines."""
    if name == 'baseline':
        return ENSEMBLE_ROW
    if name.endswith('_baseline'):
        return f'two_{name}s'
    return None


def ensemble_top1(score_files: Sequence[str]) -> float:
    """Top-1 of the mean of several runs' (N, K) test scores (``.npz`` files
    written by :func:`evaluate_checkpoint`, the same test images in the same
    order)."""
    runs = [np.load(path) for path in score_files]
    labels = runs[0]['labels']
    for path, run in zip(score_files, runs):
        if not np.array_equal(run['labels'], labels):
            raise ValueError(f'{path}: its test labels differ from '
                             f'{score_files[0]}; not the same test split')
    mean_scores = np.mean([run['scores'] for run in runs], axis=0)
    return float((mean_scores.argmax(axis=1) == labels).mean())


def pairwise_ensembles(records: Sequence[dict]) -> List[dict]:
    """One record per pair of the given runs (same config, other seeds):
    the top-1 of their mean softmax."""
    records = sorted(records, key=lambda r: r['seed'])
    pairs = []
    for i, first in enumerate(records):
        for second in records[i + 1:]:
            pairs.append(dict(config=ensemble_row_name(first.get('config', '')) or ENSEMBLE_ROW,
                              seed=f"{first['seed']}+{second['seed']}",
                              top1=ensemble_top1([first['scores_file'],
                                                  second['scores_file']]),
                              train_s=first['train_s'] + second['train_s']))
    return pairs


def aggregate(records: List[dict], config_names: Sequence[str]) -> Dict[str, dict]:
    """Mean, std, min, max of every metric per row; the ensemble row (from
    the baseline's runs, when there are two or more) after the baseline."""
    summary = {}
    for name in config_names:
        runs = [r for r in records if r['config'] == name]
        summary[name] = {metric: summarise([run_value(r, metric) for r in runs])
                         for metric in METRICS}
        summary[name]['train_s'] = summarise([r['train_s'] for r in runs])
        ensemble_name = ensemble_row_name(name)
        if ensemble_name and len(runs) > 1:
            pairs = pairwise_ensembles(runs)
            summary[ensemble_name] = {metric: summarise([run_value(p, metric)
                                                         for p in pairs])
                                      for metric in METRICS}
            summary[ensemble_name]['train_s'] = summarise([p['train_s'] for p in pairs])
            summary[ensemble_name]['pairs'] = pairs
    return summary


def mean_curves(records: Sequence[dict],
                config_names: Sequence[str]) -> Dict[str, Dict[str, Optional[List[float]]]]:
    """Per row, the mean over its seeds of each per-epoch accuracy.

    Args:
        records (list[dict]): the runs; those with ``epoch_curves`` count.
        config_names (list[str]): the rows.

    Returns:
        dict: row -> metric of :data:`CURVE_METRICS` -> the mean at each
        epoch (as many epochs as the shortest curve), or None where no run
        of the row has that metric; rows without curves are left out.
    """
    means = {}
    for name in config_names:
        runs = [r['epoch_curves'] for r in records
                if r['config'] == name and r.get('epoch_curves')]
        if not runs:
            continue
        means[name] = {}
        for metric in CURVE_METRICS:
            curves = [run[metric] for run in runs if run.get(metric) is not None]
            if not curves:
                means[name][metric] = None
                continue
            epochs = min(len(curve) for curve in curves)
            means[name][metric] = [statistics.mean(curve[e] for curve in curves)
                                   for e in range(epochs)]
    return means
