"""Which loss moves which module? Per-loss gradient norms of a DAF model.

For a few training batches of a config, each loss term of ``DAFClassifier.loss``
is differentiated on its own, and the L2 norm of its gradient is taken over the
parameters of each module group (student backbone, student head, SPPN = FPN +
SPPN head, teacher, hint regressor, fusion head). The table is the mean over
the batches. Weights come from ``--checkpoint`` (e.g. a final checkpoint of
``benchmarks/learning.py``) or from the config's init (its Pretrained
checkpoint included).

Usage::

    python benchmarks/grad_norms.py configs/daf_r18_synthetic.py \\
        --data-root work_dirs/learning/data/<set> --batches 4 \\
        [--checkpoint work_dirs/learning/daf_seed0/epoch_6.pth] \\
        [--cfg-options model.rank_target.crop=32]
"""
import argparse
import copy
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
from benchmarks.common import (  # noqa: E402
    check_out_path,
    load_config,
    model_cfg_with_preprocessor,
    write_json,
)

# Group name -> the model's modules in it, by attribute path.
MODULE_GROUPS = {
    'backbone': ('backbone', ),
    'head': ('head', ),
    'sppn': ('sppn_neck', 'sppn_head'),
    'teacher': ('teacher', ),
    'hint_reg': ('distill.hint_regressor', ),
    'fusion': ('fusion_head', ),
}


def group_parameters(model) -> Dict[str, List]:
    """Module group name -> its trainable parameters (absent groups dropped)."""
    from mmdaf.engine.hooks.num_classes_check_hook import submodule_at
    groups = {}
    for group, names in MODULE_GROUPS.items():
        params = []
        for name in names:
            module = submodule_at(model, name)
            if module is not None:
                params += [p for p in module.parameters() if p.requires_grad]
        if params:
            groups[group] = params
    return groups


def loss_grad_norms(losses: Dict, groups: Dict[str, List]) -> Dict[str, Dict[str, float]]:
    """loss name -> group -> L2 norm of d loss / d group parameters."""
    import torch
    names = [name for name, value in losses.items()
             if name.startswith('loss') and torch.is_tensor(value) and value.requires_grad]
    norms = {}
    for name in names:
        norms[name] = {}
        for group, params in groups.items():
            grads = torch.autograd.grad(losses[name], params, retain_graph=True,
                                        allow_unused=True)
            squares = [g.pow(2).sum() for g in grads if g is not None]
            norms[name][group] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    return norms


def measure(config: str, data_root: str, batches: int, checkpoint: Optional[str],
            cfg_options: Optional[Dict]) -> Dict:
    """Per loss and module group, the gradient norm averaged over ``batches``
    training batches of ``data_root``."""
    import torch
    from mmengine.runner import Runner, load_checkpoint
    from mmpretrain.registry import MODELS

    cfg = load_config(config, cfg_options)
    model_cfg = model_cfg_with_preprocessor(cfg)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu', logger='silent')
    model.train()
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    loader_cfg.update(num_workers=0, persistent_workers=False)
    loader_cfg.dataset.data_root = data_root
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    groups = group_parameters(model)
    totals: Dict[str, Dict[str, float]] = {}
    for index, data in enumerate(loader):
        if index == batches:
            break
        data = model.data_preprocessor(data, True)
        losses = model(**data, mode='loss')
        for name, per_group in loss_grad_norms(losses, groups).items():
            for group, value in per_group.items():
                totals.setdefault(name, {}).setdefault(group, 0.0)
                totals[name][group] += value / batches
    return dict(config=config, checkpoint=checkpoint, batches=batches, norms=totals)


def format_table(result: Dict) -> str:
    groups = list(MODULE_GROUPS)
    lines = [f"{'loss':<14}" + ''.join(f'{g:>10}' for g in groups)]
    for name, per_group in result['norms'].items():
        lines.append(f'{name:<14}' + ''.join(
            f"{per_group[g]:>10.3g}" if g in per_group else f"{'-':>10}" for g in groups))
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--data-root', required=True, help='CUB-layout synthetic root')
    parser.add_argument('--checkpoint', help='weights to load (default: config init)')
    parser.add_argument('--batches', type=int, default=4)
    parser.add_argument('--out', help='write the result as JSON here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    if args.batches < 1:
        parser.error(f'--batches must be >= 1, got {args.batches}')
    check_out_path(parser, args.out)
    result = measure(args.config, args.data_root, args.batches, args.checkpoint,
                     args.cfg_options)
    print(format_table(result))
    write_json(result, args.out)
    return result


if __name__ == '__main__':
    main()
