"""Backbone-pass equivalents (P) and FLOP counts for ``benchmarks/speed.py``.

FLOPs are counted by ``torch.utils.flop_counter``: matmuls and convolutions,
forward and backward. They do not depend on the machine's load, which makes
them the noise-free complement of the timings.
"""
from typing import Callable, Dict, Optional

# A forward pass without backward costs about a third of a training pass
# (the backward pass does about twice the forward's FLOPs).
FORWARD_SHARE = 1 / 3


def backbone_pass_equivalents(num_parts: int, part_scale: float, with_sppn: bool,
                              with_teacher: bool, teacher_factor: float = 1.0,
                              parts_forward_only: bool = False) -> float:
    """P: backbone passes per image that DAF's training step makes by design.

    Args:
        num_parts (int): N, part images per image.
        part_scale (float): side of a part image relative to the input; a pass
            on it costs about ``part_scale**2`` of a full-size pass.
        with_sppn (bool): whether part images are made at all.
        with_teacher (bool): whether a teacher runs.
        teacher_factor (float): teacher pass cost in student passes
            (``T_teacher_b / T_b``, or 1 for the nominal count).
        parts_forward_only (bool): the part pass sends no gradient into the
            backbone (``DAFClassifier(part_backbone_grad_scale=0)``), so it
            counts as :data:`FORWARD_SHARE` of a training pass.

    Returns:
        float: ``1 + N * scale**2 * share * with_sppn + teacher_factor *
        with_teacher``, share 1 or :data:`FORWARD_SHARE`.
    """
    if num_parts < 0 or part_scale <= 0 or teacher_factor <= 0:
        raise ValueError(f'need num_parts >= 0, part_scale > 0, teacher_factor > 0; got '
                         f'{num_parts}, {part_scale}, {teacher_factor}')
    passes = 1.0
    if with_sppn:
        passes += num_parts * part_scale**2 * (FORWARD_SHARE if parts_forward_only else 1)
    if with_teacher:
        passes += teacher_factor
    return passes


def count_flops(fn: Callable[[], None]) -> int:
    """FLOPs of ``fn`` as ``torch.utils.flop_counter`` counts them.

    Only matmuls and convolutions (forward and backward) are counted, not
    element-wise ops, NMS or data movement; the count does not depend on the
    machine's load, which makes it the noise-free complement of the timings.
    """
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def step_flop_ratios(step_fns: Dict[str, Callable[[], None]], num_parts: int,
                     part_scale: float, with_sppn: bool, with_teacher: bool,
                     parts_forward_only: bool, infer_passes: float,
                     per_step_factor: Optional[Callable[[str], float]] = None) -> dict:
    """The train and inference ratios with FLOP counts in place of seconds.

    Args:
        step_fns (dict): the whole steps by name: ``backbone_train``,
            ``daf_train``, ``backbone_predict``, ``daf_predict`` and, where the
            model has them, ``parts_backbone_train`` and
            ``teacher_backbone_train``.
        num_parts (int): N, part images per image.
        part_scale (float): side of a part image relative to the input.
        with_sppn (bool): whether part images are made.
        with_teacher (bool): whether a teacher runs; its pass counts as its
            FLOPs over the student's.
        parts_forward_only (bool): whether the part pass is forward-only in
            the backbone.
        infer_passes (float): Q, the backbone passes of a prediction.
        per_step_factor (callable, optional): step name -> the share of one
            call that is one step (``DAFSteps.per_step_factor``: 1/k for a
            ``daf_train`` that runs a ``rank_interval`` cycle of k steps).

    Returns:
        dict: ``flops`` (per step), ``flops_passes_train`` (P by FLOPs),
        ``flops_train_ratio`` and ``flops_infer_ratio``.
    """
    per_step_factor = per_step_factor or (lambda name: 1.0)
    step_flops = {name: count_flops(fn) * per_step_factor(name)
                  for name, fn in step_fns.items()}
    flops_teacher_factor = 1.0
    if with_teacher:
        flops_teacher_factor = (step_flops['teacher_backbone_train']
                                / step_flops['backbone_train'])
    flops_passes = backbone_pass_equivalents(num_parts, part_scale, with_sppn,
                                             with_teacher, flops_teacher_factor,
                                             parts_forward_only)
    return dict(
        flops=step_flops,
        flops_passes_train=flops_passes,
        flops_train_ratio=step_flops['daf_train'] / (
            flops_passes * step_flops['backbone_train']),
        flops_infer_ratio=step_flops['daf_predict'] / (
            infer_passes * step_flops['backbone_predict']))
