"""What ``benchmarks/learning.py`` prints: a line per finished run, then the
summary table (and a line on its part-coverage columns), the loss curves, the
accuracy curves (``--curves``) and the wall time."""
import statistics

from benchmarks.learning_eval import COVERAGE_TOP_N

# The summary table's columns: (title, metric, shown in percent).
COLUMNS = [('top-1 %', 'top1', True), ('mean cls %', 'mean_class_acc', True),
           ('student %', 'student_top1', True),
           ('st. image %', 'student_image_top1', True),
           ('teacher %', 'teacher_top1', True),
           ('train %', 'train_top1', True), ('st. train %', 'student_train_top1', True),
           ('hit %', 'hit_rate', True), ('random', 'random_hit_rate', True),
           ('part-in %', 'part_in_box_rate', True),
           ('random', 'random_part_in_box_rate', True),
           ('parts', 'parts_covered', False), ('random', 'parts_covered_random', False),
           ('train s', 'train_s', False)]
# Decimals of the columns not shown with one (counts of parts).
DIGITS = {'parts_covered': 2, 'parts_covered_random': 2}
# The accuracy curves printed with --curves: (title, metric of the curves).
CURVE_LINES = [('test top-1 %', 'top1'), ('train top-1 %', 'train_top1'),
               ('student test top-1 %', 'student_top1')]


def format_run(record: dict) -> str:
    """The line printed when a run is finished."""
    return (f"{record['config']} seed {record['seed']}: top-1 "
            f"{100 * record['top1']:.1f}%, mean class acc "
            f"{100 * record['mean_class_acc']:.1f}%, train "
            f"{record['train_s']:.0f} s, load {record['loadavg_end'][0]:.2f}")


def _cell(stats, percent: bool = True, digits: int = 1) -> str:
    """``mean ± std`` of a summarised metric, ``-`` without values (or
    without the metric: a summary written before it existed)."""
    if not stats or stats.get('mean') is None:
        return '-'
    scale = 100 if percent else 1
    text = f"{scale * stats['mean']:.{digits}f}"
    if stats.get('std') is not None:
        text += f" ± {scale * stats['std']:.{digits}f}"
    return text


def format_table(result: dict) -> str:
    """One line per row of ``result['summary']``, one column per metric."""
    lines = [f"{'config':<18}" + ''.join(f'{title:>13}' for title, _, _ in COLUMNS)]
    for name, stats in result['summary'].items():
        lines.append(f'{name:<18}' + ''.join(
            f'{_cell(stats.get(key), percent, DIGITS.get(key, 1)):>13}'
            for _, key, percent in COLUMNS))
    return '\n'.join(lines)


def format_coverage_note(result: dict) -> str:
    """What the ``parts`` columns count, and their ceiling (the annotated
    parts per test image); empty when no row has them."""
    ceilings = sorted({f"{stats['num_parts']['mean']:.2f}"
                       for stats in result['summary'].values()
                       if (stats.get('num_parts') or {}).get('mean') is not None})
    if not ceilings:
        return ''
    return (f'parts: different annotated parts among the top {COVERAGE_TOP_N} '
            'proposals of a test image, mean (random: boxes of the same sizes), '
            f"of {' / '.join(ceilings)} visible parts per image")


def format_loss_curves(result: dict, name: str = 'loss_pred') -> str:
    """Per row, the seeds' mean of a logged loss at every epoch (the
    learning curves of :func:`loss_curve`)."""
    lines = []
    for row in result['settings']['configs']:
        curves = [r['loss_curve'][name] for r in result['runs']
                  if r['config'] == row and name in (r.get('loss_curve') or {})]
        if not curves:
            continue
        epochs = min(len(curve) for curve in curves)
        means = [statistics.mean(curve[e] for curve in curves) for e in range(epochs)]
        lines.append(f'{row:<18}' + ''.join(f'{value:>7.2f}' for value in means))
    if not lines:
        return ''
    return f'{name} per epoch, mean over seeds\n' + '\n'.join(lines)


def format_accuracy_curves(result: dict, title: str, metric: str) -> str:
    """Per row, the seeds' mean of one accuracy at every epoch, in percent
    (``result['epoch_curves']``, written with ``--curves``)."""
    lines = [f'{row:<18}' + ''.join(f'{100 * value:>7.1f}' for value in means[metric])
             for row, means in (result.get('epoch_curves') or {}).items()
             if means.get(metric)]
    if not lines:
        return ''
    return f'{title} per epoch, mean over seeds\n' + '\n'.join(lines)


def format_summary(result: dict) -> str:
    """The summary printed at the end: the table, the curves of ``loss_pred``
    and ``distill_kept`` where logged, the test, train and student test top-1
    per epoch with ``--curves``, the wall time and load averages."""
    parts = [format_table(result)]
    note = format_coverage_note(result)
    if note:
        parts.append(note)
    for name in ('loss_pred', 'distill_kept'):
        curves = format_loss_curves(result, name)
        if curves:
            parts.append(curves)
    for title, metric in CURVE_LINES:
        curves = format_accuracy_curves(result, title, metric)
        if curves:
            parts.append(curves)
    machine = result['machine']
    parts.append(f"wall {result['wall_s']:.0f} s; load average start "
                 f"{machine['loadavg_start'][0]:.2f}, end {machine['loadavg_end'][0]:.2f}")
    return '\n'.join(parts)
