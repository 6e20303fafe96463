"""Evaluate a checkpoint on the config's test set.

Usage:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]

The metrics are printed at the end as one JSON line, e.g.
``{"accuracy/top1": 87.5}``.
"""
import argparse
import json
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.evaluator import DumpResults
from mmengine.runner import Runner

import mmdaf  # noqa: F401  (registers mmdaf components, allow-lists checkpoints)
from mmdaf.datasets import check_config_datasets
from mmdaf.engine import close_distributed, setup_cpu_distributed
from mmdaf.utils import register_checkpoint_loader


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs')
    parser.add_argument('--out', help='dump the per-sample predictions to this pickle file')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value pairs')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='UNSAFE: load checkpoints with weights_only=False for this run, i.e. '
        'unpickle any object they hold (only for files from a trusted source)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main() -> None:
    args = parse_args()
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl or .pickle file, got {args.out!r}')
    cfg = merge_args(Config.fromfile(args.config), args)
    if args.trust_checkpoint:
        register_checkpoint_loader(trust_checkpoint=True)
    # Wrong dataset roots fail here, naming the path and the expected layout.
    check_config_datasets(cfg, loader_names=('test_dataloader', ))
    # Without CUDA, a distributed launch runs on gloo with a CPU-aware DDP.
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    if args.out is not None:
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    metrics = runner.test()
    if runner.rank == 0:
        print(json.dumps({k: round(float(v), 4) for k, v in metrics.items()}))
    # Its DDP wrapper holds the process group (see close_distributed).
    del runner
    close_distributed()


if __name__ == '__main__':
    main()
