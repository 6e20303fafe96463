"""Cost of a DAF-net step in backbone-pass equivalents.

DAF runs, by design, P backbone passes per training image: the student (1), the
N part images at ``part_images.scale`` of the input side (N * scale**2) and the
teacher (T_teacher_b / T_b, measured; about 1 for a teacher of the student's
depth). Everything else (location heatmap, SPPN with NMS, part image
composition, PAF-bilinear pooling, the losses) is overhead around those passes.
This script measures, in ONE process with the runs interleaved round by round
(so that a noisy, shared machine slows both sides alike):

- ``T_b``: the plain student's train step, forward + backward of backbone, GAP,
  FC and cross entropy, batch B;
- ``T_daf``: forward + backward of ``DAFClassifier.loss`` on the same batch;
- ``train_ratio = T_daf / (P * T_b)`` (median of the per-round ratios); the
  overhead we drive down is ``train_ratio - 1``. P counts the paper's passes
  (student, N part images, teacher) that the step runs: N counts 0 on the
  steps where nothing reads the part images (no ``loss_concentrate``, and
  the step ranks nothing or its ``rank_target`` does not use them,
  ``speed_model.part_pass_needed``); the ranking target's own forward-only
  passes (``SPPNHead(rank_samples=K)``'s K single-box images per image, or
  ``WindowRankTarget``'s N + K windows) are extra and show up in the ratio
  and in their own breakdown row;
- ``infer_ratio = T_daf_predict / (Q * T_b_predict)`` with Q = 2 passes
  (student + teacher; 1 without a teacher), eval mode, no grad;
- a breakdown of T_daf by stage, each stage timed alone by calling the
  classifier's pieces on the inputs a real step gives them (forward + backward
  where the stage has parameters or carries gradient), with the peak memory of
  each stage: on CUDA ``torch.cuda.max_memory_allocated`` above the level at the
  stage's start; on CPU the same quantity computed from the allocation events of
  ``torch.profiler`` (``profile_memory=True``): the running sum of the tensor
  bytes allocated and freed during the stage, its maximum. Both count tensor
  memory only (no allocator caches, no Python objects).

Usage::

    python benchmarks/speed.py --quick                  # R18 synthetic, < 2 min on 2 cores
    python benchmarks/speed.py --device cuda --amp      # R50 CUB config at 448
    python benchmarks/speed.py --config configs/daf_r18_synthetic.py --size 128 \
        --batch 8 --repeats 10 --out work_dirs/speed.json

Inputs are random normalised tensors (seeded): costs do not depend on the pixel
values except through the number of SPPN candidates that enter NMS.

Code: this file runs the measurements and holds the command line;
``speed_model.py`` builds the model and the batch, ``speed_timing.py`` times
and measures memory, ``speed_flops.py`` counts passes and FLOPs,
``speed_stages.py`` holds the steps and the per-stage breakdown and
``speed_report.py`` the printed summary; ``common.py`` writes the JSON.
"""
import argparse
import os
import os.path as osp
import platform
import statistics
import sys
from typing import Callable, Dict, Optional, Sequence

import torch
from mmengine.config import DictAction

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
from benchmarks.common import check_out_path, write_json  # noqa: E402
from benchmarks.speed_flops import (  # noqa: E402
    backbone_pass_equivalents,
    count_flops,
    step_flop_ratios,
)
from benchmarks.speed_model import (  # noqa: E402
    build_daf_model,
    make_batch,
    part_pass_is_forward_only,
    part_pass_share,
)
from benchmarks.speed_report import format_flops_only, format_table  # noqa: E402
from benchmarks.speed_stages import DAFSteps, measure_breakdown  # noqa: E402
from benchmarks.speed_timing import (  # noqa: E402
    MIB,
    interleaved_times,
    median_ratio,
    peak_memory_bytes,
    sum_rounds,
)

DEFAULT_CONFIG = 'configs/daf_r50_cub.py'
QUICK_CONFIG = 'configs/daf_r18_synthetic.py'
QUICK_SETTINGS = dict(size=128, batch=2, repeats=9, warmup=2, threads=1)


# ----------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------
def _machine(device: str) -> dict:
    """Platform, versions, CPU count, torch threads and the GPU's name."""
    info = dict(platform=platform.platform(), python=platform.python_version(),
                torch=torch.__version__, cpu_count=os.cpu_count(),
                torch_threads=torch.get_num_threads(), device=device)
    if device.startswith('cuda'):
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def run_benchmark(config: str, device: str = 'cpu', amp: bool = False, size: int = 448,
                  batch: int = 2, repeats: int = 5, warmup: int = 1,
                  breakdown: bool = True, memory: bool = True, flops: bool = True,
                  threads: Optional[int] = None, cfg_options: Optional[dict] = None,
                  log: Callable[[str], None] = print) -> dict:
    """Measure everything described in the module docstring.

    Args:
        config (str): a ``DAFClassifier`` config.
        device (str): ``cpu`` or ``cuda[:i]``.
        amp (bool): autocast the forward passes.
        size (int): input side in pixels (>= 32).
        batch (int): batch size B.
        repeats (int): timed rounds.
        warmup (int): untimed rounds first.
        breakdown (bool): time each stage of the DAF step alone.
        memory (bool): measure peak memory.
        flops (bool): count FLOPs.
        threads (int, optional): torch intra-op threads during the run (the
            previous setting is restored after it).
        cfg_options (dict, optional): config keys to override.
        log (callable): progress messages.

    Returns:
        dict: the results, as written to ``--out``.
    """
    for name, value, low in (('size', size, 32), ('batch', batch, 1),
                             ('repeats', repeats, 1), ('warmup', warmup, 0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f'{name} must be an int >= {low}, got {value!r}')
    if threads is not None and threads < 1:
        raise ValueError(f'threads must be >= 1, got {threads}')
    previous_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        return _run_benchmark(config, device, amp, size, batch, repeats, warmup,
                              breakdown, memory, flops, cfg_options, log)
    finally:
        torch.set_num_threads(previous_threads)


def _run_benchmark(config, device, amp, size, batch, repeats, warmup, breakdown, memory,
                   flops, cfg_options, log) -> dict:
    loadavg_start = os.getloadavg()
    torch.manual_seed(0)
    model = build_daf_model(config, device, cfg_options)
    inputs, labels, samples = make_batch(model, batch, size, device)
    steps = DAFSteps(model, inputs, labels, samples, device, amp)

    num_parts = model.sppn_head.num_parts if model.with_sppn else 0
    part_scale = float(model.part_image_generator.scale)
    # P counts the part pass on the steps that run it.
    part_share = part_pass_share(model)

    train_fns = _train_steps(steps)
    log(f'timing train steps: {list(train_fns)} x ({warmup} warm-up + {repeats}) rounds')
    train = interleaved_times(train_fns, device, warmup, repeats)
    train['daf_train'] = [t * steps.per_step_factor('daf_train') for t in train['daf_train']]
    predict = interleaved_times(
        {'backbone_predict': steps.backbone_predict, 'daf_predict': steps.daf_predict},
        device, warmup, repeats)

    teacher_factor = 1.0
    if model.with_teacher:
        teacher_factor = median_ratio(train['teacher_backbone_train'],
                                      train['backbone_train'])
    forward_only = part_pass_is_forward_only(model)
    passes = backbone_pass_equivalents(num_parts * part_share, part_scale,
                                       model.with_sppn, model.with_teacher,
                                       teacher_factor, forward_only)
    passes_nominal = backbone_pass_equivalents(num_parts * part_share, part_scale,
                                               model.with_sppn, model.with_teacher,
                                               1.0, forward_only)
    infer_passes = 2.0 if model.with_teacher else 1.0
    # The passes as measured, each at its own batch size (B*N for the parts).
    pass_names = [name for name in ('backbone_train', 'parts_backbone_train',
                                    'teacher_backbone_train') if name in train]
    train_ratio = median_ratio(train['daf_train'], train['backbone_train'], passes)
    result = dict(
        config=config, device=device, amp=amp, size=size, batch=batch, repeats=repeats,
        warmup=warmup, machine=_machine(device), loadavg_start=list(loadavg_start),
        num_parts=num_parts, part_scale=part_scale, with_sppn=model.with_sppn,
        part_pass_share=part_share, parts_forward_only=forward_only,
        with_heatmap=model.location_heatmap is not None,
        with_teacher=model.with_teacher,
        times_s={name: statistics.median(values)
                 for name, values in {**train, **predict}.items()},
        times_all_s={**train, **predict},
        teacher_factor=teacher_factor,
        passes_train=passes,
        passes_train_nominal=passes_nominal,
        passes_infer=infer_passes,
        train_ratio=train_ratio,
        train_ratio_nominal=median_ratio(train['daf_train'], train['backbone_train'],
                                         passes_nominal),
        train_overhead=train_ratio - 1.0,
        infer_ratio=median_ratio(predict['daf_predict'], predict['backbone_predict'],
                                 infer_passes),
        pass_ratio=median_ratio(train['daf_train'], sum_rounds(train, pass_names)),
    )
    result['pass_overhead'] = result['pass_ratio'] - 1.0

    if flops:
        step_fns = {**train_fns, 'backbone_predict': steps.backbone_predict,
                    'daf_predict': steps.daf_predict}
        result.update(step_flop_ratios(step_fns, num_parts * part_share, part_scale,
                                       model.with_sppn,
                                       model.with_teacher, forward_only, infer_passes,
                                       per_step_factor=steps.per_step_factor))
    if breakdown:
        result.update(measure_breakdown(steps, result['times_s']['daf_train'], warmup,
                                        repeats, memory, flops, log))
    if memory:
        result['peak_mem_mib'] = dict(
            backbone_train=peak_memory_bytes(steps.backbone_train, device) / MIB,
            daf_train=peak_memory_bytes(steps.daf_train, device) / MIB)
        result['memory_measure'] = (
            'torch.cuda.max_memory_allocated above the level at the start'
            if device.startswith('cuda') else
            'CPU: peak of the running sum of torch.profiler [memory] events '
            '(tensor bytes allocated minus freed) during the stage')
    result['loadavg_end'] = list(os.getloadavg())
    return result


def _train_steps(steps: DAFSteps) -> Dict[str, Callable[[], None]]:
    """The training steps timed together: the student's, DAF's and, where the
    model has them, the part and teacher passes alone."""
    train_fns = {'backbone_train': steps.backbone_train, 'daf_train': steps.daf_train}
    if part_pass_share(steps.model) > 0:
        train_fns['parts_backbone_train'] = steps.parts_backbone_train
    if steps.model.with_teacher:
        train_fns['teacher_backbone_train'] = steps.teacher_backbone_train
    return train_fns


def flops_only(config: str, size: int, batch: int,
               cfg_options: Optional[dict] = None) -> dict:
    """FLOP counts of the steps and stages, nothing timed (CPU)."""
    model = build_daf_model(config, 'cpu', cfg_options)
    inputs, labels, samples = make_batch(model, batch, size, 'cpu')
    steps = DAFSteps(model, inputs, labels, samples, 'cpu', amp=False)
    step_fns = dict(backbone_train=steps.backbone_train, daf_train=steps.daf_train,
                    backbone_predict=steps.backbone_predict, daf_predict=steps.daf_predict)
    result = dict(config=config, size=size, batch=batch, cfg_options=cfg_options or {},
                  flops={name: count_flops(fn) * steps.per_step_factor(name)
                         for name, fn in step_fns.items()},
                  stage_gflops={name: count_flops(fn) * steps.per_step_factor(name) / 1e9
                                for name, fn in steps.stages().items()})
    backbone = result['flops']['backbone_train'] / 1e9
    result['stage_backbone_passes'] = {name: value / backbone
                                       for name, value in result['stage_gflops'].items()}
    return result


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line, with the defaults of ``--quick`` or of the full run
    filled in and ``--config`` resolved against the repository."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=None,
                        help=f'a DAFClassifier config (default {DEFAULT_CONFIG}; '
                        f'{QUICK_CONFIG} with --quick)')
    parser.add_argument('--device', default=None,
                        help='cpu or cuda[:i] (default: cuda when available)')
    parser.add_argument('--amp', action='store_true',
                        help='autocast forward passes (fp16 on CUDA, bf16 on CPU)')
    parser.add_argument('--size', type=int, default=None,
                        help='input side in pixels (default 448; 128 with --quick)')
    parser.add_argument('--batch', type=int, default=None,
                        help='batch size B (default 16 on CUDA, 2 on CPU; 2 with --quick)')
    parser.add_argument('--repeats', type=int, default=None,
                        help='timed rounds (default 5; 9 with --quick)')
    parser.add_argument('--warmup', type=int, default=None,
                        help='untimed rounds first (default 1; 2 with --quick)')
    parser.add_argument('--quick', action='store_true',
                        help=f'{QUICK_CONFIG}, size 128, batch 2, 9 repeats after 2 '
                        'warm-up rounds, 1 thread (about 1 min on 2 busy CPU cores)')
    parser.add_argument('--no-breakdown', action='store_true',
                        help='skip the per-stage breakdown')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory measurements')
    parser.add_argument('--no-flops', action='store_true',
                        help='skip the FLOP counts')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch intra-op threads (default: torch\'s own choice; 1 '
                        'with --quick); on a loaded machine 2 threads wait on each '
                        'other and 1 gives faster, steadier numbers')
    parser.add_argument('--flops-only', action='store_true',
                        help='only count FLOPs (no timing, no memory); seconds, '
                        'for what-if configs')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. '
                        'model.sppn_head.feat_channels=128')
    parser.add_argument('--out', help='write the results as JSON here (JSON whatever '
                        'the extension)')
    args = parser.parse_args(argv)
    check_out_path(parser, args.out)
    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.quick:
        defaults = dict(QUICK_SETTINGS, config=QUICK_CONFIG)
    else:
        defaults = dict(config=DEFAULT_CONFIG, size=448, repeats=5, warmup=1, threads=None,
                        batch=16 if args.device.startswith('cuda') else 2)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not osp.isabs(args.config) and not osp.exists(args.config):
        args.config = osp.join(REPO_ROOT, args.config)
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the benchmark (or only count FLOPs), print it, write the JSON."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.flops_only:
        result = flops_only(args.config, args.size, args.batch, args.cfg_options)
        print(format_flops_only(result))
        write_json(result, args.out)
        return result
    result = run_benchmark(args.config, device=args.device, amp=args.amp, size=args.size,
                           batch=args.batch, repeats=args.repeats, warmup=args.warmup,
                           breakdown=not args.no_breakdown, memory=not args.no_memory,
                           flops=not args.no_flops, threads=args.threads,
                           cfg_options=args.cfg_options)
    result['cfg_options'] = args.cfg_options or {}
    print(format_table(result))
    write_json(result, args.out)
    return result


if __name__ == '__main__':
    main()
