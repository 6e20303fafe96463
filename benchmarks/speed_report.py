"""The summary ``benchmarks/speed.py`` prints."""
from typing import Sequence

from benchmarks.speed_flops import FORWARD_SHARE


def format_table(result: dict) -> str:
    """The human-readable summary printed by ``benchmarks/speed.py``."""
    times = result['times_s']
    lines = [
        f"config {result['config']}  device {result['device']}  amp {result['amp']}  "
        f"input {result['batch']}x3x{result['size']}x{result['size']}  "
        f"repeats {result['repeats']} (+{result['warmup']} warm-up)",
        f"threads {result['machine']['torch_threads']}  load average start "
        f"{_fmt_load(result['loadavg_start'])}  end {_fmt_load(result['loadavg_end'])}",
        '',
        f"{'measure':<40}{'median s':>10}",
    ]
    for name, value in times.items():
        lines.append(f'{name:<40}{value:>10.4f}')
    # A forward-only part pass counts as a share of a training pass.
    share = FORWARD_SHARE if result.get('parts_forward_only') else 1
    lines += [
        '',
        # steps: the share of training steps that run the part pass.
        f"P = 1 + N*scale^2*share*steps + teacher = 1 + {result['num_parts']}*"
        f"{result['part_scale']:g}^2*{share:.3g}*{result.get('part_pass_share', 1.0):.3g} + "
        f"{result['teacher_factor']:.3f} (measured) "
        f"= {result['passes_train']:.3f}  (nominal, teacher = 1: "
        f"{result['passes_train_nominal']:.3f})",
        f"train_ratio = T_daf / (P * T_b) = {result['train_ratio']:.3f}  "
        f"(overhead {result['train_overhead']:+.3f}; nominal P: "
        f"{result['train_ratio_nominal']:.3f})",
        f"pass_ratio = T_daf / (T_b + T_parts_b + T_teacher_b), each pass measured at "
        f"its own batch = {result['pass_ratio']:.3f} (overhead {result['pass_overhead']:+.3f})",
        f"infer_ratio = T_daf_predict / ({result['passes_infer']:g} * T_b_predict) = "
        f"{result['infer_ratio']:.3f}",
    ]
    if 'flops' in result:
        lines.append(
            f"FLOP count (conv/matmul, fwd+bwd): train ratio "
            f"{result['flops_train_ratio']:.3f} with P = {result['flops_passes_train']:.3f}"
            f", infer ratio {result['flops_infer_ratio']:.3f}")
    if 'breakdown' in result:
        has_mem = 'peak_mem_mib' in result['breakdown'][0]
        has_flops = 'gflops' in result['breakdown'][0]
        lines += ['', f"{'stage':<46}{'group':<17}{'s':>9}{'% T_daf':>9}"
                  + (f"{'peak MiB':>10}" if has_mem else '')
                  + (f"{'GFLOP':>9}" if has_flops else '')]
        for row in result['breakdown']:
            line = (f"{row['stage']:<46}{row['group']:<17}{row['time_s']:>9.4f}"
                    f"{100 * row['share_of_daf']:>8.1f}%")
            if has_mem:
                line += f"{row['peak_mem_mib']:>10.1f}"
            if has_flops:
                line += f"{row['gflops']:>9.3f}"
            lines.append(line)
        lines.append(f"{'sum of stages':<63}{result['breakdown_sum_s']:>9.4f}")
        lines.append(f"{'T_daf - sum (autograd glue, unattributed)':<63}"
                     f"{result['breakdown_unattributed_s']:>9.4f}")
        if 'sppn_forward_detail_s' in result:
            detail = ', '.join(f'{name} {value:.4f}'
                               for name, value in result['sppn_forward_detail_s'].items())
            lines.append(f'SPPN forward only (s): {detail}')
    if 'peak_mem_mib' in result:
        mem = result['peak_mem_mib']
        lines.append(f"peak memory (MiB): backbone train step {mem['backbone_train']:.1f}"
                     f", DAF train step {mem['daf_train']:.1f}  "
                     f"[{result['memory_measure']}]")
    return '\n'.join(lines)


def _fmt_load(load: Sequence[float]) -> str:
    """Load averages as ``1.00/1.10/1.20``."""
    return '/'.join(f'{value:.2f}' for value in load)


def format_flops_only(result: dict) -> str:
    """The table printed by ``--flops-only``: GFLOP and backbone passes per
    stage, then GFLOP per whole step."""
    lines = [f"{'stage':<46}{'GFLOP':>10}{'backbone passes':>17}"]
    for name, value in result['stage_gflops'].items():
        lines.append(
            f"{name:<46}{value:>10.3f}{result['stage_backbone_passes'][name]:>17.3f}")
    for name, value in result['flops'].items():
        lines.append(f'{name:<46}{value / 1e9:>10.3f}')
    return '\n'.join(lines)
