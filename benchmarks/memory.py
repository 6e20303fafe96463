"""Peak process memory of one DAF training step (forward + backward).

Usage:
    python benchmarks/memory.py [--config configs/daf_r50_cub.py] [--size 448]
        [--batch 2] [--with-cp]

Prints the process's peak resident memory (``resource.getrusage``) after the
model is built and after one step on random inputs, and their difference: the
memory the step itself needs on the CPU (fp32). Run it once per setting: the
peak of a process never goes down.
"""
import argparse
import resource

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import mmdaf  # noqa: F401


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/daf_r50_cub.py')
    parser.add_argument('--size', type=int, default=448)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--with-cp', action='store_true',
                        help='activation checkpointing in the student and teacher backbones')
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    init_default_scope('mmpretrain')
    model_cfg = cfg.model
    model_cfg.backbone.init_cfg = None  # random weights: nothing to download
    model_cfg.backbone.with_cp = args.with_cp
    if model_cfg.get('teacher') is not None:
        model_cfg.teacher.backbone.init_cfg = None
        model_cfg.teacher.backbone.with_cp = args.with_cp
    model = MODELS.build(model_cfg).train()
    built = peak_rss_mib()

    num_classes = cfg.data_preprocessor.num_classes
    inputs = torch.randn(args.batch, 3, args.size, args.size)
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(args.batch)]
    losses = model.loss(inputs, samples)
    sum(value for name, value in losses.items() if name.startswith('loss')).backward()
    peak = peak_rss_mib()
    print(f'config={args.config} size={args.size} batch={args.batch} '
          f'with_cp={args.with_cp} built_MiB={built:.0f} peak_MiB={peak:.0f} '
          f'step_MiB={peak - built:.0f}')


if __name__ == '__main__':
    main()
