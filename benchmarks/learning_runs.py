"""Training and evaluating the runs of ``benchmarks/learning.py``.

One run is one row (config) at one training seed, in its own work dir under
``--work-dir``: a ``tools/train.py`` subprocess, then an evaluation subprocess
(``learning.py --evaluate``) of its final checkpoint. A finished run is reused
when its training options and its config are unchanged (the config's
fingerprint, a SHA-1 of the merged config, is kept in its ``run_record.json``),
and its evaluation only when it was written after its checkpoint.

With ``--curves`` a run keeps every epoch's checkpoint, and each is evaluated
for its test and training-split top-1 (``epoch_curves.json``, reused by the
same rule as the final evaluation). Which checkpoints a run keeps is not part
of what must match for reuse: a ``--curves`` run serves a plain benchmark as it
is, and a plain run asked for curves is trained again (it kept only its final
checkpoint), with a message.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import mmengine

from benchmarks.common import REPO_ROOT
from benchmarks.learning_presets import config_path

# The synthetic configs' anchors (octave_base_scale=1.25) are sized for 64 px.
ANCHOR_BASE_SCALE_AT_64 = 1.25
# The script whose ``--evaluate`` mode evaluates one finished run.
LEARNING_SCRIPT = osp.join(REPO_ROOT, 'benchmarks', 'learning.py')
# The training options that only say which checkpoints a run keeps: not
# compared when a finished run is reused.
CHECKPOINT_OPTIONS = 'default_hooks.checkpoint.'
# A run's files: its final evaluation and, with --curves, its per-epoch one.
EVAL_FILE = 'final_epoch_eval.json'
CURVES_FILE = 'epoch_curves.json'


# ----------------------------------------------------------------------------
# The training options and the reuse of finished runs
# ----------------------------------------------------------------------------
def cfg_options(config: str, data_root: str, num_classes: int, img_size: int,
                epochs: int, seed: int, extra: Sequence[str] = (),
                pretrained: bool = True, curves: bool = False) -> List[str]:
    """``--cfg-options`` for tools/train.py: data, classes, epochs, seed;
    ``extra`` for DAF rows only; ``pretrained=False`` drops the Pretrained
    inits; ``curves=True`` keeps every epoch's checkpoint (otherwise only the
    final one)."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    model = cfg.model
    options = {
        'data_preprocessor.num_classes': num_classes,
        'model.head.num_classes': num_classes,
        'train_cfg.max_epochs': epochs,
        'param_scheduler.T_max': epochs,
        'randomness.seed': seed,
        'default_hooks.checkpoint.interval': 1 if curves else epochs,
        'default_hooks.checkpoint.max_keep_ckpts': epochs if curves else 1,
        'default_hooks.logger.interval': 5,
    }
    if not pretrained:
        options['model.backbone.init_cfg'] = None
    if model.get('teacher') is not None:
        options['model.teacher.head.num_classes'] = num_classes
        if not pretrained:
            options['model.teacher.backbone.init_cfg'] = None
    if model.get('fusion_head') is not None:
        options['model.fusion_head.num_classes'] = num_classes
    if model.get('sppn_head', {}).get('num_classes') is not None:
        options['model.sppn_head.num_classes'] = num_classes
    if model.get('sppn_head', {}).get('anchor_generator') is not None and img_size != 64:
        options['model.sppn_head.anchor_generator.octave_base_scale'] = \
            ANCHOR_BASE_SCALE_AT_64 * img_size / 64
    # Only the train loader: --no-validate drops the val loader, and the test
    # split is read by evaluate_checkpoint with its own data root.
    options['train_dataloader.dataset.data_root'] = data_root
    options['train_dataloader.num_workers'] = 0
    options['train_dataloader.persistent_workers'] = False
    pairs = [f'{key}={value}' for key, value in options.items()]
    if model.get('type') == 'DAFClassifier':
        pairs += list(extra)
    return pairs


def training_options(options: Sequence[str]) -> List[str]:
    """The options that decide what a run learns: ``options`` without those
    of the checkpoint hook (which checkpoints it keeps)."""
    return [o for o in options if not o.startswith(CHECKPOINT_OPTIONS)]


def config_fingerprint(config: str) -> str:
    """Short SHA-1 of the merged config's text: what a reused run must match."""
    from mmengine.config import Config
    return hashlib.sha1(Config.fromfile(config).pretty_text.encode()).hexdigest()[:12]


def config_unchanged(record: dict, fingerprint: str, work_dir: str) -> bool:
    """Whether a finished run was trained from the config as it is now (a run
    recorded without a fingerprint counts as changed)."""
    recorded = record.get('config_sha1')
    if recorded != fingerprint:
        print(f'{work_dir}: the config changed since this run was trained '
              f'({recorded} -> {fingerprint}); training it again', flush=True)
        return False
    return True


def evaluation_is_current(eval_out: str, checkpoint: str) -> bool:
    """Whether ``eval_out`` exists and was written after ``checkpoint``: an
    evaluation of an earlier training of the same run (one killed between
    training and evaluation) is not reused."""
    return osp.isfile(eval_out) and osp.getmtime(eval_out) >= osp.getmtime(checkpoint)


def reusable_record(work_dir: str, checkpoint: str, options: List[str], fingerprint: str,
                    eval_only: bool, retrain: bool) -> Optional[dict]:
    """The record of a finished run that can be reused, or None.

    Args:
        work_dir (str): the run's work dir.
        checkpoint (str): its final checkpoint.
        options (list[str]): the training options of this benchmark.
        fingerprint (str): the config's fingerprint now.
        eval_only (bool): ``--eval-only``: the record is read and reused
            whatever its config's fingerprint.
        retrain (bool): ``--retrain``: nothing is reused.

    Returns:
        dict or None: the record, or None when the run must be trained.

    Raises:
        ValueError: the run was trained with other options (the checkpoint
            hook's options aside: a run that kept every epoch's checkpoint
            serves one that keeps the final one).
    """
    record_path = osp.join(work_dir, 'run_record.json')
    if not (eval_only or (not retrain and osp.isfile(record_path)
                          and osp.isfile(checkpoint))):
        return None
    with open(record_path) as f:
        record = json.load(f)
    recorded = record.get('train_options', options)
    if training_options(recorded) != training_options(options):
        raise ValueError(f'{work_dir} was trained with other options than this '
                         f'run\'s ({record["train_options"]} against {options}); '
                         'use another --work-dir or --retrain')
    if config_unchanged(record, fingerprint, work_dir) or eval_only:
        return record
    return None


def epoch_checkpoints(work_dir: str, epochs: int) -> List[str]:
    """The checkpoints of every epoch of a run, first to final."""
    return [osp.join(work_dir, f'epoch_{epoch}.pth') for epoch in range(1, epochs + 1)]


def keeps_every_epoch(record: dict, work_dir: str, epochs: int) -> bool:
    """Whether the run's latest training kept every epoch's checkpoint (its
    recorded options save each epoch) and they are all there; checkpoints
    left over from an earlier training do not count."""
    options = dict(o.split('=', 1) for o in record.get('train_options', []))
    return (options.get(CHECKPOINT_OPTIONS + 'interval') == '1'
            and all(osp.isfile(p) for p in epoch_checkpoints(work_dir, epochs)))


def curves_plan(record: Optional[dict], work_dir: str, epochs: int,
                eval_only: bool) -> str:
    """What ``--curves`` needs for one run whose reusable record is ``record``.

    Args:
        record (dict, optional): what :func:`reusable_record` returned (None:
            the run is trained anyway).
        work_dir (str): the run's work dir.
        epochs (int): the number of epochs.
        eval_only (bool): ``--eval-only``: evaluate the curves again.

    Returns:
        str: ``'reuse'`` (its ``epoch_curves.json`` was written after its
        final checkpoint), ``'evaluate'`` (every epoch's checkpoint of its
        latest training is there) or ``'train'`` (the run must be trained,
        again if it kept only its final checkpoint: says so).

    Raises:
        FileNotFoundError: ``eval_only`` and the epochs' checkpoints are not
            all there.
    """
    if record is None:
        return 'train'
    checkpoint = epoch_checkpoints(work_dir, epochs)[-1]
    if not eval_only and evaluation_is_current(osp.join(work_dir, CURVES_FILE),
                                               checkpoint):
        return 'reuse'
    if keeps_every_epoch(record, work_dir, epochs):
        return 'evaluate'
    if eval_only:
        raise FileNotFoundError(f'{work_dir}: --curves --eval-only needs every '
                                'epoch\'s checkpoint, and this run kept only its '
                                'final one; run without --eval-only to train it again')
    print(f'{work_dir}: trained without --curves, only its final checkpoint is '
          'kept; training it again to keep every epoch\'s checkpoint', flush=True)
    return 'train'


# ----------------------------------------------------------------------------
# One run: train, evaluate, record
# ----------------------------------------------------------------------------
def run_dir(work_dir: str, name: str, seed: int) -> str:
    """The folder of one run, always inside ``work_dir``.

    A row named by a relative config path keeps that path
    (``work_dirs/exp/cfgs/x.py_seed0``); an absolute path or one that climbs
    out (``..``) keeps only its file name, since joined as it is it would put
    the run next to the config instead.
    """
    row = osp.normpath(name)
    if osp.isabs(row) or row.split(os.sep)[0] == '..':
        row = osp.basename(row)
    return osp.join(work_dir, f'{row}_seed{seed}')


def train_and_evaluate(name: str, seed: int, args: argparse.Namespace,
                       data_root: str) -> dict:
    """One training subprocess, then one evaluation subprocess; their record.

    Args:
        name (str): the row (a name of ``CONFIGS`` or a config path).
        seed (int): the training seed.
        args (argparse.Namespace): the benchmark's arguments.
        data_root (str): the synthetic set.

    Returns:
        dict: the run's record (config, seed, options, times, load averages)
        with its evaluation, final training loss and loss curves; with
        ``args.curves`` also ``epoch_curves``, the accuracies of every epoch.
    """
    config = config_path(name)
    work_dir = run_dir(args.work_dir, name, seed)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    checkpoint = osp.join(work_dir, f'epoch_{args.epochs}.pth')
    eval_out = osp.join(work_dir, EVAL_FILE)
    curves = args.curves
    options = cfg_options(config, data_root, args.num_classes, args.img_size,
                          args.epochs, seed, args.cfg_options or (),
                          pretrained=not args.no_pretrain, curves=curves)
    fingerprint = config_fingerprint(config)
    record = reusable_record(work_dir, checkpoint, options, fingerprint,
                             args.eval_only, args.retrain)
    plan = curves_plan(record, work_dir, args.epochs, args.eval_only) if curves else None
    if plan == 'train':
        record = None
    reuse = record is not None
    if not reuse:
        record = train_run(name, seed, config, work_dir, options, fingerprint, env,
                           start)
    eval_start = time.perf_counter()
    if args.eval_only or not reuse or not evaluation_is_current(eval_out, checkpoint):
        evaluate_run(config, work_dir, checkpoint, eval_out, data_root, args, env)
    with open(eval_out) as f:
        record.update(json.load(f))
    if curves:
        curves_out = osp.join(work_dir, CURVES_FILE)
        if plan != 'reuse':
            evaluate_run(config, work_dir, checkpoint, curves_out, data_root, args, env,
                         curve_checkpoints=epoch_checkpoints(work_dir, args.epochs))
        with open(curves_out) as f:
            record['epoch_curves'] = json.load(f)
    record['final_train_loss'] = final_train_loss(work_dir)
    record['loss_curve'] = loss_curve(work_dir)
    record['eval_s'] = time.perf_counter() - eval_start
    record['reused'] = reuse
    record['loadavg_end'] = list(os.getloadavg())
    return record


def train_run(name: str, seed: int, config: str, work_dir: str, options: List[str],
              fingerprint: str, env: Dict[str, str], start: float) -> dict:
    """Train one run with ``tools/train.py``; write and return its record.

    Args:
        name (str): the row.
        seed (int): the training seed.
        config (str): the row's config file.
        work_dir (str): the run's work dir (the training log goes to
            ``train_stdout.log`` there).
        options (list[str]): the ``--cfg-options`` of the training.
        fingerprint (str): the config's fingerprint.
        env (dict): the subprocess's environment.
        start (float): ``time.perf_counter()`` at the run's start, for
            ``train_s``.

    Returns:
        dict: the record written to ``run_record.json``.
    """
    record = dict(config=name, config_path=osp.relpath(config, REPO_ROOT),
                  seed=seed, work_dir=work_dir, train_options=options,
                  config_sha1=fingerprint, loadavg_start=list(os.getloadavg()))
    train_cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), config,
                 '--work-dir', work_dir, '--no-validate', '--cfg-options', *options]
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, 'train_stdout.log'), 'w') as log:
        subprocess.run(train_cmd, check=True, cwd=REPO_ROOT, env=env, stdout=log,
                       stderr=subprocess.STDOUT)
    record['train_s'] = time.perf_counter() - start
    record['loadavg_train_end'] = list(os.getloadavg())
    mmengine.dump(record, osp.join(work_dir, 'run_record.json'), indent=2)
    return record


def evaluate_run(config: str, work_dir: str, checkpoint: str, eval_out: str,
                 data_root: str, args: argparse.Namespace, env: Dict[str, str],
                 curve_checkpoints: Optional[Sequence[str]] = None) -> None:
    """Evaluate a run's final checkpoint in a subprocess (``learning.py
    --evaluate``), writing ``eval_out`` and the test scores of the run; with
    ``curve_checkpoints``, only the test and training-split top-1 of each of
    those checkpoints instead (the ``--curves`` evaluation).

    Args:
        config (str): the row's config file; the subprocess reads the copy the
            Runner dumped into the work dir, with the run's options applied.
        work_dir (str): the run's work dir (the log goes to
            ``eval_stdout.log`` there).
        checkpoint (str): the final checkpoint.
        eval_out (str): where the evaluation's JSON goes.
        data_root (str): the synthetic set.
        args (argparse.Namespace): the benchmark's arguments.
        env (dict): the subprocess's environment.
        curve_checkpoints (list[str], optional): every epoch's checkpoint,
            first to final (the log goes to ``curves_stdout.log``).
    """
    # The Runner dumps the merged config into the work dir under its own name.
    dumped_config = osp.join(work_dir, osp.basename(config))
    eval_cmd = [sys.executable, LEARNING_SCRIPT, '--evaluate', dumped_config,
                '--checkpoint', checkpoint, '--data-root', data_root,
                '--num-classes', str(args.num_classes), '--random-draws',
                str(args.random_draws), '--out', eval_out]
    if curve_checkpoints:
        eval_cmd += ['--curve-checkpoints', *curve_checkpoints]
        log_name = 'curves_stdout.log'
    else:
        eval_cmd += ['--scores-out', osp.join(work_dir, 'test_scores.npz')]
        log_name = 'eval_stdout.log'
    with open(osp.join(work_dir, log_name), 'w') as log:
        subprocess.run(eval_cmd, check=True, cwd=REPO_ROOT, env=env, stdout=log,
                       stderr=subprocess.STDOUT)


# ----------------------------------------------------------------------------
# The training log
# ----------------------------------------------------------------------------
def logged_entries(work_dir: str) -> List[dict]:
    """The training log's per-iteration entries (vis_data/scalars.json)."""
    paths = []
    for root, _, files in os.walk(work_dir):
        paths += [osp.join(root, f) for f in files if f == 'scalars.json']
    if not paths:
        return []
    with open(sorted(paths)[-1]) as f:
        entries = [json.loads(line) for line in f]
    return [entry for entry in entries if 'epoch' in entry]


def final_train_loss(work_dir: str) -> Optional[float]:
    """Mean logged total loss over the last epoch."""
    entries = [e for e in logged_entries(work_dir) if 'loss' in e]
    if not entries:
        return None
    last_epoch = entries[-1]['epoch']
    return statistics.mean(e['loss'] for e in entries if e['epoch'] == last_epoch)


def loss_curve(work_dir: str) -> Dict[str, List[float]]:
    """Per-epoch means of the logged losses that show who learns what.

    ``loss_pred`` is the cross entropy of the student's own logits: the DAF
    model's ``loss_pred``, a plain classifier's ``loss``. ``loss_teacher``,
    ``loss_soft`` and ``distill_kept`` are added where logged.
    """
    by_epoch: Dict[str, Dict[int, List[float]]] = {}
    for entry in logged_entries(work_dir):
        values = dict(loss_pred=entry.get('loss_pred', entry.get('loss')))
        values.update({name: entry.get(name)
                       for name in ('loss_teacher', 'loss_soft', 'distill_kept')})
        for name, value in values.items():
            if value is not None:
                by_epoch.setdefault(name, {}).setdefault(entry['epoch'], []).append(value)
    return {name: [statistics.mean(per_epoch[e]) for e in sorted(per_epoch)]
            for name, per_epoch in by_epoch.items()}
