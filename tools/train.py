"""Train a model from an mmdaf (or any mmpretrain) config.

Usage:
    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|CKPT]] [--amp]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
"""
import argparse
import os
import os.path as osp
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import mmdaf  # noqa: F401  (registers mmdaf components, allow-lists checkpoints)
from mmdaf.datasets import check_config_datasets
from mmdaf.engine import close_distributed, setup_cpu_distributed
from mmdaf.utils import check_local_pretrained, register_checkpoint_loader


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line (``argv``, default ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description='Train a DAF-net (or mmpretrain) model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and checkpoints')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint; without a path (or with "auto"), '
        'resume from the latest checkpoint in the work dir, if any')
    parser.add_argument(
        '--amp', action='store_true', help='enable automatic mixed precision training')
    parser.add_argument(
        '--no-validate', action='store_true', help='do not validate during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual total batch size '
        '(auto_scale_lr.base_batch_size in the config is the reference)')
    parser.add_argument(
        '--no-pin-memory', action='store_true', help='disable pin_memory in dataloaders')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='disable persistent_workers in dataloaders')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value pairs, e.g. '
        'train_dataloader.batch_size=4 model.backbone.depth=18')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torchrun passes LOCAL_RANK through the environment; older launchers pass it
    # as an argument.
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='UNSAFE: load checkpoints with weights_only=False for this run, i.e. '
        'unpickle any object they hold (only for files from a trusted source)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line flags to the config."""
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    cfg.launcher = args.launcher

    # work_dir: command line > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True

    for loader_name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(loader_name, None)
        if loader is None:
            continue
        if args.no_pin_memory:
            loader['pin_memory'] = False
        if args.no_persistent_workers:
            loader['persistent_workers'] = False

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def load_config(args: argparse.Namespace) -> Config:
    """The config file with the command line flags applied."""
    return merge_args(Config.fromfile(args.config), args)


def build_runner(cfg: Config) -> Runner:
    """The Runner that ``main`` trains: dataset checks, CPU DDP setup, Runner."""
    # Wrong dataset roots fail here, naming the path and the expected layout.
    check_config_datasets(cfg, loader_names=('train_dataloader', 'val_dataloader'))
    # So does a missing local pretrained checkpoint (the Runner initialises the
    # weights before it loads or resumes, so it is needed then too).
    check_local_pretrained(cfg.model)
    # Without CUDA, a distributed launch runs on gloo with a CPU-aware DDP.
    setup_cpu_distributed(cfg)
    return Runner.from_cfg(cfg)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.trust_checkpoint:
        register_checkpoint_loader(trust_checkpoint=True)
    runner = build_runner(load_config(args))
    runner.train()
    # Its DDP wrapper holds the process group (see close_distributed).
    del runner
    close_distributed()


if __name__ == '__main__':
    main()
