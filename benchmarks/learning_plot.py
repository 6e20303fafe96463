"""The learning curves of ``benchmarks/learning.py --curves`` as a picture.

One PNG: x the epoch, y the test top-1 in percent; per row a line, the mean
over its seeds, in a band shaded from the lowest to the highest seed at each
epoch (min..max, not a standard deviation: with 3 seeds the band shows every
seed). It reads the per-run curves (``runs[].epoch_curves`` of the result
JSON, the records of :func:`benchmarks.learning.run_all`), so a finished
result can be plotted again: ``learning.py --plot-only RESULT.json``.

matplotlib draws on an Agg canvas attached to a :class:`Figure`, without
pyplot, so the global backend is left alone and no display is needed.
"""
import json
import os.path as osp
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

# The picture's name in the work dir when there is no --out.
DEFAULT_NAME = 'learning_curves.png'


def curve_bands(records: Sequence[dict], config_names: Sequence[str],
                metric: str = 'top1') -> Dict[str, dict]:
    """Per row, the seeds' mean, min and max of one per-epoch accuracy.

    Args:
        records (list[dict]): the runs; those whose ``epoch_curves`` hold
            ``metric`` count.
        config_names (list[str]): the rows, in the order to draw them.
        metric (str): the accuracy of the curves (``top1``: test top-1).

    Returns:
        dict: row -> ``epochs`` (x values: the curves' epochs, else 1, 2, ...),
        ``mean``, ``min``, ``max`` (fractions, as many epochs as the shortest
        curve of the row, as :func:`learning_tables.mean_curves`) and ``seeds``
        (how many runs); rows without such curves are left out.
    """
    bands = {}
    for name in config_names:
        runs = [r['epoch_curves'] for r in records
                if r.get('config') == name and (r.get('epoch_curves') or {}).get(metric)]
        if not runs:
            continue
        length = min(len(run[metric]) for run in runs)
        per_epoch = [[run[metric][e] for run in runs] for e in range(length)]
        epochs = runs[0].get('epochs') or []
        if len(epochs) < length or any(e is None for e in epochs[:length]):
            epochs = list(range(1, length + 1))
        bands[name] = dict(epochs=list(epochs[:length]),
                           mean=[statistics.mean(v) for v in per_epoch],
                           min=[min(v) for v in per_epoch],
                           max=[max(v) for v in per_epoch],
                           seeds=len(runs))
    return bands


def plot_curves(records: Sequence[dict], config_names: Sequence[str], path: str,
                metric: str = 'top1', title: Optional[str] = None):
    """Write the PNG of one per-epoch accuracy, one line per row.

    Args:
        records (list[dict]): the runs (see :func:`curve_bands`).
        config_names (list[str]): the rows, in the order to draw them.
        path (str): the PNG to write.
        metric (str): the accuracy of the curves (``top1``: test top-1).
        title (str, optional): the first line of the title.

    Returns:
        matplotlib.figure.Figure: the figure; its axes hold per row a line
        (label: the row) of the mean in percent and a filled band from the
        min to the max, in row order.

    Raises:
        ValueError: no run has curves of ``metric``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bands = curve_bands(records, config_names, metric)
    if not bands:
        raise ValueError(f'no run has learning curves of {metric!r} '
                         '(epoch_curves: written by learning.py --curves)')
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    seeds = sorted({band['seeds'] for band in bands.values()})
    for name, band in bands.items():
        line, = ax.plot(band['epochs'], [100 * v for v in band['mean']], marker='o',
                        markersize=3, label=f"{name} ({band['seeds']} seeds)")
        ax.fill_between(band['epochs'], [100 * v for v in band['min']],
                        [100 * v for v in band['max']], color=line.get_color(),
                        alpha=0.2, linewidth=0)
    seed_text = '/'.join(str(s) for s in seeds)
    ax.set_title(f"{title or _TITLES.get(metric, metric) + ' per epoch'}\n"
                 f'line: mean over {seed_text} seeds, band: min..max over seeds',
                 fontsize=10)
    ax.set_xlabel('epoch')
    ax.set_ylabel(f'{_TITLES.get(metric, metric)} %')
    epochs = sorted({e for band in bands.values() for e in band['epochs']})
    ax.set_xticks(epochs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='best')
    fig.tight_layout()
    fig.savefig(path, format='png')
    return fig


_TITLES = dict(top1='test top-1', train_top1='train top-1',
               student_top1='student test top-1',
               student_train_top1='student train top-1')


def plot_path(out: Optional[str], work_dir: str) -> str:
    """Where ``learning.py --curves`` writes the picture: beside ``out`` with
    its stem and ``.png`` (``<stem>.curves.png`` if ``out`` is itself a
    ``.png``, so the JSON is not overwritten), else :data:`DEFAULT_NAME` in the work
    dir."""
    if not out:
        return osp.join(work_dir, DEFAULT_NAME)
    stem, ext = osp.splitext(out)
    return stem + ('.curves.png' if ext.lower() == '.png' else '.png')


def load_curve_records(path: str) -> Tuple[List[dict], List[str]]:
    """The runs and rows of a result JSON of ``learning.py --curves``.

    Raises:
        ValueError: the JSON holds no run with learning curves.
    """
    with open(path) as f:
        result = json.load(f)
    records = result.get('runs') if isinstance(result, dict) else None
    if not isinstance(records, list) or not any(
            isinstance(r, dict) and (r.get('epoch_curves') or {}).get('top1')
            for r in records):
        raise ValueError(f'{path}: no learning curves (runs[].epoch_curves with '
                         'test top-1); it was not written by learning.py --curves')
    configs = (result.get('settings') or {}).get('configs') or []
    for record in records:  # rows of the runs the settings do not name
        if record.get('config') not in configs:
            configs.append(record.get('config'))
    return records, configs
