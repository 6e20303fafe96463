"""Training steps of the GPU recipe: AMP, activation checkpointing and DDP.

Builds a config's model (default ``configs/daf_r50_cub.py``; random weights,
nothing is downloaded) and trains a few steps on random images with the
optimizer wrappers that ``tools/train.py`` uses, in these modes:

=============  ============================================================
mode           what runs
=============  ============================================================
``fp32``       ``OptimWrapper``, ``with_cp=False``: the reference
``fp32_cp``    ``OptimWrapper``, ``with_cp=True`` in both backbones
``amp``        ``AmpOptimWrapper`` (fp16, dynamic loss scale), no with_cp
``amp_cp``     ``AmpOptimWrapper`` + ``with_cp``: configs/daf_r50_cub_fp16-cp.py
``amp_cp_ddp`` ``amp_cp`` inside DistributedDataParallel (one process):
               the student backbone runs twice per step, which DDP refuses
               with reentrant checkpointing
=============  ============================================================

For each mode it reports the peak memory (``torch.cuda.max_memory_allocated``
during the steps, the model and optimizer state included) and its ratio to
``fp32``, the median step time and its ratio to ``fp32``, the losses of the
last step, whether every gradient that reached the optimizer was finite, how
many steps the loss scaler skipped (fp16 overflow) and the final loss scale.
The exit status is 1 when a mode fails (an exception, a non-finite loss, a
non-finite gradient, or every step skipped).

Usage (on a GPU machine, from the repository root; see gpu_check.sh)::

    python tools/misc/gpu_check.py [--config configs/daf_r50_cub.py] [--size 448]
        [--batch 8] [--steps 3] [--modes fp32 amp_cp ...] [--out result.json]

``--device cpu`` is a dry run of the script itself: AMP is then bf16 autocast
(mmengine's ``AmpOptimWrapper`` needs a GPU), DDP uses gloo, no memory figures.
"""
import argparse
import copy
import json
import os
import os.path as osp
import socket
import statistics
import sys
import time
import traceback
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

MODES = ('fp32', 'fp32_cp', 'amp', 'amp_cp', 'amp_cp_ddp')
MIB = 1024.0**2


def _drop_pretrained(cfg):
    """Copy of a config tree without ``Pretrained`` init_cfgs (no downloads)."""
    if isinstance(cfg, dict):
        return {key: (None if key == 'init_cfg' and isinstance(value, dict)
                      and value.get('type') == 'Pretrained' else _drop_pretrained(value))
                for key, value in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_drop_pretrained(value) for value in cfg)
    return cfg


def build_model(config: str, with_cp: bool, device: str):
    """The config's model (data preprocessor included) on ``device``."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import mmdaf  # noqa: F401  (registers the components)
    from mmdaf.utils import init_weights_quietly

    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model_cfg = _drop_pretrained(copy.deepcopy(cfg.model.to_dict()))
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor', None))
    for backbone in (model_cfg.get('backbone'),
                     (model_cfg.get('teacher') or {}).get('backbone')):
        if backbone is not None:
            backbone['with_cp'] = with_cp
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    init_weights_quietly(model)
    return model.to(device).train(), cfg.data_preprocessor.num_classes


def make_data(batch: int, size: int, num_classes: int) -> dict:
    """What a dataloader gives ``train_step``: uint8 images and labels."""
    from mmpretrain.structures import DataSample
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                            generator=generator) for _ in range(batch)]
    labels = torch.randint(num_classes, (batch, ), generator=generator)
    return dict(inputs=inputs,
                data_samples=[DataSample().set_gt_label(int(label)) for label in labels])


class CPUBF16OptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward runs under CPU bf16 autocast (the dry
    run's stand-in for ``AmpOptimWrapper``, which needs a GPU)."""

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=torch.bfloat16):
            yield


def build_optim_wrapper(model, amp: bool, device: str) -> OptimWrapper:
    """SGD (the config's settings) in OptimWrapper or AmpOptimWrapper."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                                weight_decay=1e-4)
    if not amp:
        return OptimWrapper(optimizer)
    if device.startswith('cuda'):
        return AmpOptimWrapper(optimizer=optimizer, loss_scale='dynamic')
    return CPUBF16OptimWrapper(optimizer)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@contextmanager
def one_process_group(device: str):
    """A world of one process (NCCL on CUDA, gloo on the CPU)."""
    import torch.distributed as dist
    saved = {name: os.environ.get(name) for name in ('MASTER_ADDR', 'MASTER_PORT')}
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(_free_port()))
    dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo',
                            rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def wrap_ddp(model, device: str):
    """DDP as mmengine's Runner builds it (no unused-parameter search)."""
    from mmengine.model.wrappers import MMDistributedDataParallel

    from mmdaf.engine import CPUDistributedDataParallel
    if device.startswith('cuda'):
        index = torch.device(device).index or 0
        return MMDistributedDataParallel(module=model, device_ids=[index],
                                         broadcast_buffers=False,
                                         find_unused_parameters=False)
    return CPUDistributedDataParallel(module=model, broadcast_buffers=False,
                                      find_unused_parameters=False)


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def run_mode(mode: str, config: str, size: int, batch: int, steps: int,
             device: str) -> dict:
    """Train 1 warm-up + ``steps`` steps in one mode; return its measurements."""
    amp, with_cp, ddp = mode.startswith('amp'), '_cp' in mode, mode.endswith('_ddp')
    model, num_classes = build_model(config, with_cp, device)
    data = make_data(batch, size, num_classes)
    optim_wrapper = build_optim_wrapper(model, amp, device)
    optimizer = optim_wrapper.optimizer
    seen = dict(updates=0, nonfinite=set(), no_grad=set())
    names = {param: name for name, param in model.named_parameters()}

    def check_grads(opt, args, kwargs):
        # Runs just before optimizer.step(), after the loss scaler unscaled
        # the gradients; a step the scaler skips (inf/NaN) never gets here.
        seen['updates'] += 1
        for group in opt.param_groups:
            for param in group['params']:
                if param.grad is None:
                    seen['no_grad'].add(names[param])
                elif not torch.isfinite(param.grad).all():
                    seen['nonfinite'].add(names[param])

    optimizer.register_step_pre_hook(check_grads)
    result = dict(mode=mode, amp=amp, with_cp=with_cp, ddp=ddp)
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats(device)
    runner_model = wrap_ddp(model, device) if ddp else model
    times, log_vars = [], {}
    for step in range(1 + steps):
        _sync(device)
        start = time.perf_counter()
        log_vars = runner_model.train_step(data, optim_wrapper)
        _sync(device)
        if step > 0:
            times.append(time.perf_counter() - start)
    losses = {name: float(value) for name, value in log_vars.items() if 'loss' in name}
    result.update(
        step_s=statistics.median(times),
        losses=losses,
        losses_finite=all(torch.isfinite(torch.tensor(v)).item() for v in losses.values()),
        steps=1 + steps,
        updates=seen['updates'],
        skipped_steps=1 + steps - seen['updates'],
        nonfinite_grads=sorted(seen['nonfinite']),
        params_without_grad=sorted(seen['no_grad']),
        loss_scale=(float(optim_wrapper.loss_scaler.get_scale())
                    if hasattr(optim_wrapper, 'loss_scaler') else None),
        peak_mem_mib=(torch.cuda.max_memory_allocated(device) / MIB
                      if device.startswith('cuda') else None),
    )
    result['ok'] = (result['losses_finite'] and not result['nonfinite_grads']
                    and result['updates'] > 0)
    return result


def check(config: str, size: int, batch: int, steps: int, modes: Sequence[str],
          device: str) -> Dict[str, dict]:
    """Run every mode (each on a fresh model); a mode that raises is reported."""
    results = {}
    for mode in modes:
        print(f'[gpu_check] {mode}: {batch}x3x{size}x{size}, {config}', flush=True)
        try:
            if mode.endswith('_ddp'):
                with one_process_group(device):
                    results[mode] = run_mode(mode, config, size, batch, steps, device)
            else:
                results[mode] = run_mode(mode, config, size, batch, steps, device)
        except Exception as error:  # noqa: BLE001  (reported in the table)
            traceback.print_exc()
            results[mode] = dict(mode=mode, ok=False, error=f'{type(error).__name__}: {error}')
        if device.startswith('cuda'):
            torch.cuda.empty_cache()
    reference = results.get('fp32', {})
    for result in results.values():
        for key in ('peak_mem_mib', 'step_s'):
            if result.get(key) and reference.get(key):
                result[f'{key}_vs_fp32'] = result[key] / reference[key]
    return results


def format_table(results: Dict[str, dict]) -> str:
    lines = [f"{'mode':<12}{'ok':>4}{'peak MiB':>10}{'x fp32':>8}{'step s':>9}"
             f"{'x fp32':>8}{'skipped':>9}{'scale':>9}  loss"]
    for mode, res in results.items():
        if 'error' in res:
            lines.append(f"{mode:<12}{'no':>4}  {res['error']}")
            continue

        def fmt(value, spec):
            width = int(spec.split('.')[0])
            return format(value, spec) if value is not None else '-'.rjust(width)

        lines.append(
            f"{mode:<12}{'yes' if res['ok'] else 'no':>4}"
            f"{fmt(res['peak_mem_mib'], '10.0f')}{fmt(res.get('peak_mem_mib_vs_fp32'), '8.2f')}"
            f"{res['step_s']:>9.3f}{fmt(res.get('step_s_vs_fp32'), '8.2f')}"
            f"{res['skipped_steps']:>6}/{res['steps']:<2}{fmt(res['loss_scale'], '9.0f')}"
            f"  {res['losses'].get('loss', float('nan')):.4f}")
        if res['nonfinite_grads']:
            lines.append(f"    non-finite gradients: {res['nonfinite_grads'][:8]}")
    return '\n'.join(lines)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default='configs/daf_r50_cub.py')
    parser.add_argument('--size', type=int, default=448)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--steps', type=int, default=3,
                        help='timed steps per mode, after one warm-up step')
    parser.add_argument('--modes', nargs='+', default=list(MODES), choices=MODES)
    parser.add_argument('--device', default=None,
                        help='cuda[:i] or cpu (default: cuda when available)')
    parser.add_argument('--out', help='write the results as JSON here')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, dict]:
    args = parse_args(argv)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    results = check(args.config, args.size, args.batch, args.steps, args.modes, device)
    machine = (torch.cuda.get_device_name(device) if device.startswith('cuda')
               else 'cpu')
    print(f'\n[gpu_check] {machine}, torch {torch.__version__}, {args.config}, '
          f'batch {args.batch} at {args.size}')
    print(format_table(results))
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as file:
            json.dump(dict(device=machine, torch=torch.__version__, config=args.config,
                           size=args.size, batch=args.batch, results=results), file,
                      indent=1)
    return results


if __name__ == '__main__':
    sys.exit(0 if all(result['ok'] for result in main().values()) else 1)
