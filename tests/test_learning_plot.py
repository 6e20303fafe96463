"""benchmarks/learning_plot.py, the picture of ``learning.py --curves``:
hand-made curves (2 rows x 2 seeds x 3 epochs) and the plotted lines and
bands checked against hand-computed means, minima and maxima."""
import importlib
import json
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _import(name: str):
    """``benchmarks/<name>.py`` as the module ``benchmarks.<name>``."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    return importlib.import_module(f'benchmarks.{name}')


learning = _import('learning')
learning_plot = _import('learning_plot')
learning_tables = _import('learning_tables')


def _curves(top1, epochs=(1, 2, 3)):
    return dict(epochs=list(epochs), top1=list(top1), train_top1=[1.0] * len(top1),
                student_top1=None, student_train_top1=None)


# Test top-1 of each run (eighths: exact in binary and in percent).
RECORDS = [
    dict(config='sppn', seed=0, train_s=10.0, epoch_curves=_curves([0.25, 0.5, 0.75])),
    dict(config='sppn', seed=1, train_s=10.0, epoch_curves=_curves([0.5, 0.5, 0.625])),
    dict(config='daf', seed=0, train_s=20.0, epoch_curves=_curves([0.375, 0.625, 0.875])),
    dict(config='daf', seed=1, train_s=20.0, epoch_curves=_curves([0.125, 0.75, 0.75])),
]
ROWS = ['sppn', 'daf']
# Hand-computed, in percent: row -> (mean, min, max) per epoch.
EXPECTED = dict(
    sppn=([37.5, 50.0, 68.75], [25.0, 50.0, 62.5], [50.0, 50.0, 75.0]),
    daf=([25.0, 68.75, 81.25], [12.5, 62.5, 75.0], [37.5, 75.0, 87.5]),
)


def _band_limits(collection, epochs):
    """The lowest and highest y of a fill_between polygon at each x."""
    vertices = np.concatenate([path.vertices for path in collection.get_paths()])
    lows, highs = [], []
    for epoch in epochs:
        ys = vertices[np.isclose(vertices[:, 0], epoch), 1]
        lows.append(ys.min())
        highs.append(ys.max())
    return lows, highs


def test_plot_draws_the_seeds_mean_and_min_max_band_per_row(tmp_path):
    records = RECORDS + [dict(config='sppn_lhm', seed=0)]  # no curves: left out
    path = tmp_path / 'curves.png'
    fig = learning_plot.plot_curves(records, ROWS + ['sppn_lhm'], str(path))
    assert path.read_bytes()[:8] == PNG_MAGIC
    ax, = fig.axes
    lines, bands = ax.get_lines(), ax.collections
    assert [line.get_label() for line in lines] == ['sppn (2 seeds)', 'daf (2 seeds)']
    assert len(bands) == 2
    means = learning_tables.mean_curves(records, ROWS)
    for name, line, band in zip(ROWS, lines, bands):
        mean, low, high = EXPECTED[name]
        assert list(line.get_xdata()) == [1, 2, 3]
        assert list(line.get_ydata()) == pytest.approx(mean)
        # The same means as the printed table of --curves.
        assert list(line.get_ydata()) == pytest.approx([100 * v for v in means[name]['top1']])
        lows, highs = _band_limits(band, [1, 2, 3])
        assert lows == pytest.approx(low) and highs == pytest.approx(high)
    assert 'min..max' in ax.get_title()
    assert ax.get_xlabel() == 'epoch' and ax.get_ylabel() == 'test top-1 %'


def test_curve_bands_cut_to_the_shortest_curve_and_number_epochs_without_them():
    records = [dict(config='daf', seed=0, epoch_curves=dict(top1=[0.5, 1.0, 1.0])),
               dict(config='daf', seed=1, epoch_curves=dict(top1=[0.25, 0.5]))]
    assert learning_plot.curve_bands(records, ['daf']) == dict(daf=dict(
        epochs=[1, 2], mean=[0.375, 0.75], min=[0.25, 0.5], max=[0.5, 1.0], seeds=2))
    with pytest.raises(ValueError, match='no run has learning curves'):
        learning_plot.plot_curves([dict(config='daf', seed=0)], ['daf'], 'unused.png')


def test_plot_path_beside_out_or_in_the_work_dir():
    assert learning_plot.plot_path('runs/curves.json', 'wd') == 'runs/curves.png'
    assert learning_plot.plot_path('runs/results', 'wd') == 'runs/results.png'
    # A result named .png is not overwritten by its picture.
    assert learning_plot.plot_path('runs/r.png', 'wd') == 'runs/r.curves.png'
    assert learning_plot.plot_path(None, 'wd') == 'wd/learning_curves.png'


def test_curves_run_writes_the_png_beside_out_and_plot_only_redraws_it(
        tmp_path, monkeypatch, capsys):
    # No training: the runs are the hand-made records.
    monkeypatch.setattr(learning, 'prepare_data', lambda args: str(tmp_path / 'data'))
    monkeypatch.setattr(learning, 'run_all', lambda args, data_root: list(RECORDS))
    out = tmp_path / 'res' / 'curves.json'
    learning.main(['--curves', '--configs', *ROWS, '--seeds', '0', '1', '--no-pretrain',
                   '--work-dir', str(tmp_path / 'wd'), '--out', str(out)])
    png = tmp_path / 'res' / 'curves.png'
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert f'wrote {png}' in capsys.readouterr().out
    # The JSON holds every seed's curve: enough to draw it again.
    assert [r['epoch_curves']['top1'] for r in json.loads(out.read_text())['runs']] == [
        r['epoch_curves']['top1'] for r in RECORDS]
    png.unlink()
    assert learning.main(['--plot-only', str(out)]) == dict(plot=str(png))
    assert png.read_bytes()[:8] == PNG_MAGIC
    # Without --out, into the work dir.
    learning.main(['--curves', '--configs', *ROWS, '--no-pretrain',
                   '--work-dir', str(tmp_path / 'wd')])
    assert (tmp_path / 'wd' / 'learning_curves.png').read_bytes()[:8] == PNG_MAGIC


def test_plot_only_rejects_a_result_without_curves(tmp_path, capsys):
    plain = tmp_path / 'plain.json'
    plain.write_text(json.dumps(dict(settings=dict(configs=ROWS), runs=[
        dict(config='daf', seed=0, top1=0.5)])))
    with pytest.raises(SystemExit, match=r'--plot-only: .*plain\.json: no learning '
                       r'curves .*not written by learning.py --curves'):
        learning.main(['--plot-only', str(plain)])
    assert not (tmp_path / 'plain.png').exists()
    with pytest.raises(SystemExit):
        learning.parse_args(['--plot-only', str(tmp_path / 'missing.json')])
    assert f"--plot-only {str(tmp_path / 'missing.json')!r}: no such file" in \
        capsys.readouterr().err
