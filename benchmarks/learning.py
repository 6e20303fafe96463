"""Do the parts help? The Table 3 rows and two controls (ResNet-18) on the synthetic set.

The script makes the generic pretrained checkpoint if it is not cached
(``tools/misc/pretrain_synthetic.py``; every row starts from it, as every row
of the paper starts from ImageNet weights), writes a synthetic fine-grained set
(fixed ``--data-seed``, the learnable preset: parts enlarged by
``--part-scale``), trains each config for the same number of epochs with each
training seed
(``tools/train.py`` subprocesses, no validation during training), then
evaluates the FINAL-epoch checkpoint (never the best epoch) on the test split:

- top-1 and mean per-class accuracy of the model's prediction (the fused score
  for the complete DAF; its student stream's top-1 is reported as well);
- the same model's top-1 on the training split (and its student stream's),
  read through the test pipeline: whether the row fitted its training images;
- the part hit rate: the fraction of the N proposed boxes whose centre lies
  inside a ground-truth part region (``parts/part_boxes.txt``, all parts,
  boundaries included), against the same for random boxes of the same
  sizes: each box keeps its width and height and gets a uniformly random
  position inside the image (``--random-draws`` draws per box, seeded);
- the part-in-box rate: the fraction of boxes that contain the centre of at
  least one part region, against the same for the random boxes (boxes far
  larger than the parts can miss with their centre and still cover a part);
- the part coverage (``PartCoverage``, regions mode): the different visible
  parts whose region centre lies in one of the top 4 proposals of an image
  (``parts_covered``), against random boxes of their sizes
  (``parts_covered_random``, ``--random-draws`` redraws of an image's boxes,
  seeded), and the visible parts per image, their ceiling (``num_parts``);
  means over the test images, the table's ``parts`` columns.

The synthetic configs use the images at their generated size (no resize or
crop in the test pipeline), so proposals and part boxes share coordinates.
With ``--img-size`` other than 64 the SPPN anchors are scaled with the image
(``octave_base_scale = 1.25 * img_size / 64``) so that they keep covering parts.
SPPN score and box statistics of the test split are recorded too (mean and max
absolute score, the share of boxes touching the image border).

``--cfg-options`` is passed to the training of every DAF row (not the
baseline), so that one switch can be measured at a time, e.g.
``--cfg-options model.rank_target.crop=32``.

The defaults are the full run (3 seeds, all five rows; see ``parse_args``),
about 18 minutes on 2 idle CPU cores; docs/benchmarks.md and
docs/benchmarks_history.md give the measured times. Usage::

    python benchmarks/learning.py --out work_dirs/learning/full.json   # full
    python benchmarks/learning.py --seeds 0 --out work_dirs/learning/seed0.json

Results are averaged over seeds (mean, sample std, min, max).

``--curves`` adds the learning curves: each run keeps every epoch's checkpoint
(``default_hooks.checkpoint.interval=1``), and after training each of them is
evaluated for its test top-1, training-split top-1 and the student stream's
test top-1 (only these: no hit rates, no score files), written to the run's
``epoch_curves.json`` and record; the report prints their means over seeds per
epoch, the JSON holds them per run (``runs[].epoch_curves``) and per row
(``epoch_curves``), and a picture of the test top-1 per epoch is written
beside ``--out`` (its stem, ``.png``; ``learning_curves.png`` in the work dir
without ``--out``): a line per row, the mean over seeds, shaded from the lowest
to the highest seed. ``--plot-only RESULT.json`` draws it again from a result
written with ``--curves`` (``RESULT.png``), without training. The table stays
the final epoch's (nothing is selected on the test split). Curves newer than
the run's final checkpoint are reused; a run trained without ``--curves`` kept
only its final checkpoint and is trained again (it says so), while a
``--curves`` run serves a plain benchmark as it is.
Usage::

    python benchmarks/learning.py --configs baseline daf --curves --out curves.json

Code: this file holds the command line and runs the rows;
``learning_presets.py`` names the rows and presets and writes the data,
``learning_runs.py`` trains, reuses and evaluates the runs,
``learning_eval.py`` evaluates one checkpoint (``learning_metrics.py``: the
accuracies and hit rates), ``learning_tables.py`` summarises the seeds and
computes the ensemble row, ``learning_report.py`` prints, ``learning_plot.py``
draws the curves.
"""
import argparse
import concurrent.futures
import os
import os.path as osp
import sys
import time
from typing import List, Optional, Sequence

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
from benchmarks.common import check_out_path, write_json  # noqa: E402
from benchmarks.learning_eval import (  # noqa: E402
    evaluate_checkpoint,
    evaluate_epoch_curves,
)
from benchmarks.learning_plot import (  # noqa: E402
    load_curve_records,
    plot_curves,
    plot_path,
)
from benchmarks.learning_presets import (  # noqa: E402
    CLUTTERS,
    CONFIGS,
    DEFAULT_CONFIGS,
    EPOCHS,
    PRESETS,
    config_path,
    ensure_pretrained,
    prepare_data,
    pretrained_checkpoint_hashes,
)
from benchmarks.learning_report import format_run, format_summary  # noqa: E402
from benchmarks.learning_runs import train_and_evaluate  # noqa: E402
from benchmarks.learning_tables import aggregate, mean_curves  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line; the preset fills the data settings the flags leave
    open."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--configs', nargs='+', default=list(DEFAULT_CONFIGS),
                        help=f'names ({", ".join(CONFIGS)}) or config paths; '
                        f'default {" ".join(DEFAULT_CONFIGS)}')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2],
                        help='training seeds (randomness.seed)')
    parser.add_argument('--preset', default='default', choices=sorted(PRESETS),
                        help='named setting of the synthetic set (default: the '
                        'reported preset; "val": the validation set defaults are '
                        'chosen on); the flags below override single values')
    parser.add_argument('--data-seed', type=int,
                        help='seed of the synthetic set (the same for every run)')
    parser.add_argument('--epochs', type=int, default=EPOCHS)
    parser.add_argument('--num-classes', type=int)
    parser.add_argument('--img-size', type=int)
    parser.add_argument('--part-scale', type=float,
                        help='part enlargement of the synthetic set (1.6: CUB-like)')
    parser.add_argument('--clutter', choices=CLUTTERS,
                        help='"parts": the clutter holds part-like shapes in part '
                        'colours; "plain": it does not')
    parser.add_argument('--train-per-class', type=int)
    parser.add_argument('--test-per-class', type=int)
    parser.add_argument('--cfg-options', nargs='+', metavar='KEY=VALUE',
                        help='extra options for the training of every DAF row')
    parser.add_argument('--no-pretrain', action='store_true',
                        help='train every row from scratch (drops the Pretrained '
                        'init of the configs)')
    parser.add_argument('--random-draws', type=int, default=20,
                        help='random boxes per proposed box for the random hit rate '
                        'and the random part coverage')
    parser.add_argument('--jobs', type=int, default=2,
                        help='training runs at a time (default 2: one per core)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads per run (OMP_NUM_THREADS; default 1)')
    parser.add_argument('--work-dir', default=osp.join(REPO_ROOT, 'work_dirs',
                                                       'learning'))
    parser.add_argument('--eval-only', action='store_true',
                        help='skip training; evaluate the final checkpoints already in '
                        '--work-dir again (same settings as their training)')
    parser.add_argument('--retrain', action='store_true',
                        help='train every run again; by default a run whose final '
                        'checkpoint and record are already in --work-dir (same '
                        'config and seed) is reused, so an interrupted benchmark '
                        'resumes and rows can be added to a finished one')
    parser.add_argument('--curves', action='store_true',
                        help='learning curves: keep every epoch\'s checkpoint and '
                        'evaluate each for test, train and student test top-1 '
                        '(the table stays the final epoch\'s); runs trained '
                        'without --curves are trained again; also writes the '
                        'test top-1 curves as a PNG beside --out (same stem) or '
                        'into --work-dir')
    parser.add_argument('--plot-only', metavar='JSON',
                        help='train nothing: draw the curves PNG again from a '
                        'result JSON written with --curves, beside it (same stem)')
    parser.add_argument('--out', help='write the results as JSON here')
    # Internal: evaluate one finished run (used by the training jobs).
    parser.add_argument('--evaluate', metavar='CONFIG', help=argparse.SUPPRESS)
    parser.add_argument('--checkpoint', help=argparse.SUPPRESS)
    parser.add_argument('--data-root', help=argparse.SUPPRESS)
    parser.add_argument('--scores-out', help=argparse.SUPPRESS)
    parser.add_argument('--curve-checkpoints', nargs='+', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_out_path(parser, args.out)
    if args.plot_only and not osp.isfile(args.plot_only):
        parser.error(f'--plot-only {args.plot_only!r}: no such file')
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ('epochs', 'num_classes', 'img_size', 'train_per_class',
                 'test_per_class', 'random_draws', 'jobs', 'threads'):
        if getattr(args, name) < 1:
            raise ValueError(f'--{name.replace("_", "-")} must be >= 1, got '
                             f'{getattr(args, name)}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Train and evaluate every row at every seed, print the summary, write
    the JSON and, with ``--curves``, the curves PNG (or, with ``--plot-only``,
    only draw that PNG; with the internal ``--evaluate``, evaluate one run)."""
    args = parse_args(argv)
    if args.plot_only:
        return plot_only(args.plot_only)
    if args.evaluate and args.curve_checkpoints:
        result = evaluate_epoch_curves(args.evaluate, args.curve_checkpoints,
                                       args.data_root, args.num_classes)
        write_json(result, args.out)
        return result
    if args.evaluate:
        result = evaluate_checkpoint(args.evaluate, args.checkpoint, args.data_root,
                                     args.num_classes, args.random_draws,
                                     args.scores_out)
        write_json(result, args.out)
        return result

    for name in args.configs:
        if not osp.isfile(config_path(name)):
            raise FileNotFoundError(f'--configs: {name!r} is neither one of '
                                    f'{sorted(CONFIGS)} nor a config file')
    os.makedirs(args.work_dir, exist_ok=True)
    start = time.perf_counter()
    loadavg_start = os.getloadavg()
    if not args.no_pretrain:
        ensure_pretrained(args.configs)
    data_root = prepare_data(args)
    records = run_all(args, data_root)
    result = dict(
        settings=dict(configs=list(args.configs), seeds=args.seeds, preset=args.preset,
                      data_seed=args.data_seed, epochs=args.epochs,
                      num_classes=args.num_classes, img_size=args.img_size,
                      part_scale=args.part_scale, clutter=args.clutter,
                      cfg_options=args.cfg_options,
                      pretrained=not args.no_pretrain,
                      pretrained_sha256=({} if args.no_pretrain else
                                         pretrained_checkpoint_hashes(args.configs)),
                      train_per_class=args.train_per_class,
                      test_per_class=args.test_per_class,
                      random_draws=args.random_draws, jobs=args.jobs,
                      threads=args.threads, data_root=data_root,
                      eval_only=args.eval_only, curves=args.curves),
        machine=dict(cpu_count=os.cpu_count(), loadavg_start=list(loadavg_start),
                     loadavg_end=list(os.getloadavg())),
        wall_s=time.perf_counter() - start,
        summary=aggregate(records, args.configs),
        runs=records,
    )
    if args.curves:
        result['epoch_curves'] = mean_curves(records, args.configs)
    print(format_summary(result))
    for checkpoint, sha256 in result['settings']['pretrained_sha256'].items():
        print(f'pretrained checkpoint {checkpoint}: sha256 {sha256}')
    if args.out:
        write_json(result, args.out)
    if args.curves:
        plot = plot_path(args.out, args.work_dir)
        plot_curves(records, args.configs, plot)
        print(f'wrote {plot}')
    return result


def plot_only(path: str) -> dict:
    """``--plot-only``: the curves PNG of a result JSON written with
    ``--curves``, beside it; exits with a message when it holds no curves."""
    try:
        records, configs = load_curve_records(path)
    except ValueError as error:
        raise SystemExit(f'--plot-only: {error}') from None
    plot = plot_path(path, osp.dirname(osp.abspath(path)))
    plot_curves(records, configs, plot)
    print(f'wrote {plot}')
    return dict(plot=plot)


def run_all(args: argparse.Namespace, data_root: str) -> List[dict]:
    """Every row at every seed, ``args.jobs`` runs at a time; their records in
    row and seed order."""
    # Longest runs first, so that the two job slots finish close together.
    jobs = [(name, seed) for name in reversed(args.configs) for seed in args.seeds]
    records = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(train_and_evaluate, name, seed, args, data_root):
                   (name, seed) for name, seed in jobs}
        for future in concurrent.futures.as_completed(futures):
            record = future.result()
            records.append(record)
            print(format_run(record), flush=True)
    records.sort(key=lambda r: (list(args.configs).index(r['config']), r['seed']))
    return records


if __name__ == '__main__':
    main()
