"""Make (once) the pretrained checkpoint that the synthetic configs start from.

The paper fine-tunes DAF-net from ImageNet weights. On this project's synthetic
data that start is emulated: a ResNet is trained on a separate generic
synthetic set (12 classes, body hue x facing; the fine-grained part attributes
are random there) and its weights are cached. The fine-grained synthetic
configs load them into the student and the teacher with
``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone')``.

Usage::

    python tools/misc/pretrain_synthetic.py            # cached after the first run
    python tools/misc/pretrain_synthetic.py --force    # train again
    # another backbone: its pretraining config; writes
    # checkpoints/convnext-w32_synthetic-generic_64px.pth (the config's name)
    python tools/misc/pretrain_synthetic.py \
        --config configs/pretrain/convnext-w32_synthetic-generic.py \
        --work-dir work_dirs/pretrain_synthetic_convnext-w32

The checkpoint holds the classifier's ``state_dict`` (``backbone.*`` and
``head.*``) and a ``meta`` dict with the config, the data and the generic test
accuracy. It is written under a temporary name and renamed, so an interrupted
run never leaves a checkpoint that looks cached.
"""
import argparse
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional

import torch
from mmengine.config import DictAction

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_CONFIG = 'configs/pretrain/r18-w32_synthetic-generic.py'
DEFAULT_OUT = 'checkpoints/r18-w32_synthetic-generic_64px.pth'
DEFAULT_DATA_ROOT = 'data/synthetic_generic'
# The generic set: keep in step with configs/_base_/datasets/synthetic_generic.py.
GENERIC_SET = dict(train_per_class=150, test_per_class=10, img_size=64,
                   part_scale=1.6, seed=1000)


def default_out(config: str) -> str:
    """The checkpoint a pretraining config writes by default:
    ``checkpoints/<config name>_<img size>px.pth`` (DEFAULT_OUT for the
    ResNet-18 config), the name the synthetic configs load."""
    name = osp.splitext(osp.basename(config))[0]
    return f"checkpoints/{name}_{GENERIC_SET['img_size']}px.pth"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='pretraining config')
    parser.add_argument('--out',
                        help='checkpoint to write (default: checkpoints/<config '
                        f'name>_64px.pth, {DEFAULT_OUT} for the default config)')
    parser.add_argument('--data-root', default=DEFAULT_DATA_ROOT,
                        help='generic set root; written when missing')
    parser.add_argument('--work-dir', default='work_dirs/pretrain_synthetic',
                        help='training logs and intermediate checkpoints')
    parser.add_argument('--force', action='store_true',
                        help='train again even when --out exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the pretraining config')
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = default_out(args.config)
    return args


def ensure_generic_set(data_root: str) -> None:
    """Write the generic set unless ``data_root`` already holds one."""
    from mmdaf.datasets import make_synthetic_generic
    if osp.isfile(osp.join(data_root, 'images.txt')):
        return
    info = make_synthetic_generic(data_root, overwrite=True, **GENERIC_SET)
    print(f"wrote the generic set: {info['num_images']} images to {data_root} "
          f"in {info['elapsed_s']:.1f} s", flush=True)


def train(config: str, data_root: str, work_dir: str,
          cfg_options: Optional[Dict] = None) -> Dict:
    """Train the pretraining config; return the model's state dict and meta."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    import mmdaf  # noqa: F401  (registers components)
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.work_dir = work_dir
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    state_dict = {key: value.detach().cpu().clone()
                  for key, value in model.state_dict().items()}
    meta = dict(config=osp.relpath(osp.abspath(config), REPO_ROOT),
                data=dict(GENERIC_SET, data_root=data_root),
                epochs=cfg.train_cfg.max_epochs,
                generic_test_top1=float(metrics.get('accuracy/top1', float('nan'))))
    return dict(state_dict=state_dict, meta=meta)


def save_atomically(checkpoint: Dict, out: str) -> None:
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    partial = f'{out}.partial'
    torch.save(checkpoint, partial)
    os.replace(partial, out)


def main(argv: Optional[List[str]] = None) -> str:
    args = parse_args(argv)
    if osp.isfile(args.out) and not args.force:
        print(f'pretrained checkpoint cached: {args.out} (--force trains again)')
        return args.out
    if not osp.isfile(args.config):
        sys.exit(f'pretrain_synthetic: config {args.config} not found')
    start = time.perf_counter()
    ensure_generic_set(args.data_root)
    checkpoint = train(args.config, args.data_root, args.work_dir, args.cfg_options)
    save_atomically(checkpoint, args.out)
    print(f"pretrained checkpoint: {args.out} (generic test top-1 "
          f"{checkpoint['meta']['generic_test_top1']:.2f} %, "
          f"{time.perf_counter() - start:.0f} s)")
    return args.out


if __name__ == '__main__':
    main()
