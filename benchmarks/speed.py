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
  (student, N part images, teacher); with ``SPPNHead(rank_samples=K)`` the K
  forward-only single-box passes per image are extra and show up in the
  ratio and in their own breakdown row;
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
"""
import argparse
import copy
import os
import os.path as osp
import platform
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.config import DictAction

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
from benchmarks.results_io import check_out_path, write_json  # noqa: E402

DEFAULT_CONFIG = 'configs/daf_r50_cub.py'
QUICK_CONFIG = 'configs/daf_r18_synthetic.py'
QUICK_SETTINGS = dict(size=128, batch=2, repeats=3, warmup=1, threads=1)
MEMORY_EVENT_NAME = '[memory]'
MIB = 1024.0**2

# Breakdown rows: (stage name, group reported in the summary).
STAGE_GROUPS = {
    'student backbone + head': 'backbone passes',
    'location heatmap': 'heatmap',
    'SPPN (FPN, head, propose incl. NMS)': 'SPPN incl. NMS',
    'part images (compose, resize)': 'part images',
    'part backbone pass (B*N)': 'backbone passes',
    'ranked anchor samples (B*K, forward only)': 'ranked samples',
    'student losses (CE, rank, IoU, area, con)': 'losses',
    'teacher input (heatmap up, box mask)': 'teacher input',
    'teacher backbone (5 ch)': 'backbone passes',
    'PAF-bilinear neck + teacher head': 'PAF-bilinear',
    'distillation (hint regressor, KL)': 'losses',
    'fusion head (CSF)': 'losses',
}


# ----------------------------------------------------------------------------
# Pure helpers (tested in tests/test_benchmarks.py)
# ----------------------------------------------------------------------------
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


def part_pass_is_forward_only(model) -> bool:
    """Whether the model's part pass is forward-only in the backbone."""
    return getattr(model, 'part_backbone_grad_scale', 1.0) == 0


def peak_from_memory_events(events: Sequence[tuple]) -> int:
    """Peak of the running sum of (time, signed bytes) allocation events.

    Events are sorted by time first; the running sum starts at 0, so the result
    is the most memory held at once above the level at the start (>= 0).
    """
    running = peak = 0
    for _, nbytes in sorted(events, key=lambda event: event[0]):
        running += nbytes
        peak = max(peak, running)
    return peak


def _sum_rounds(times: Dict[str, List[float]], names: Sequence[str]) -> List[float]:
    """Round-by-round sum of the named timings."""
    return [sum(values) for values in zip(*(times[name] for name in names))]


def median_ratio(numerators: Sequence[float], denominators: Sequence[float],
                 scale: float = 1.0) -> float:
    """Median over rounds of ``numerator / (scale * denominator)``."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(f'need two equally long non-empty lists, got '
                         f'{len(numerators)} and {len(denominators)}')
    return statistics.median(n / (scale * d) for n, d in zip(numerators, denominators))


# ----------------------------------------------------------------------------
# Model and batch
# ----------------------------------------------------------------------------
def _drop_pretrained(cfg):
    """Copy of a config tree without ``Pretrained`` init_cfgs (no downloads)."""
    if isinstance(cfg, dict):
        out = {}
        for key, value in cfg.items():
            if key == 'init_cfg' and isinstance(value, dict) and \
                    value.get('type') == 'Pretrained':
                out[key] = None
            else:
                out[key] = _drop_pretrained(value)
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_drop_pretrained(value) for value in cfg)
    return cfg


def build_daf_model(config: str, device: str, cfg_options: Optional[dict] = None):
    """Build the config's ``DAFClassifier`` with random (non-pretrained) weights.

    ``cfg_options`` are merged into the config first (``--cfg-options``).
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import mmdaf  # noqa: F401  (registers the components)
    from mmdaf.models.classifiers.daf_classifier import DAFClassifier
    from mmdaf.utils import init_weights_quietly

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model_cfg = _drop_pretrained(copy.deepcopy(cfg.model.to_dict()))
    if model_cfg.get('type') != 'DAFClassifier':
        raise ValueError(f'--config must define a DAFClassifier model, {config} has '
                         f'type={model_cfg.get("type")!r}')
    model = MODELS.build(model_cfg)
    assert isinstance(model, DAFClassifier)
    init_weights_quietly(model)
    return model.to(device)


def make_batch(model, batch: int, size: int, device: str, seed: int = 0):
    from mmpretrain.structures import DataSample
    num_classes = model.head.num_classes
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, 3, size, size, generator=generator).to(device)
    labels = torch.randint(num_classes, (batch, ), generator=generator)
    samples = [DataSample().set_gt_label(int(label)) for label in labels]
    return inputs, labels.to(device), samples


# ----------------------------------------------------------------------------
# Timing and memory
# ----------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], None], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def interleaved_times(fns: Dict[str, Callable[[], None]], device: str, warmup: int,
                      repeats: int) -> Dict[str, List[float]]:
    """Run every function once per round, ``warmup`` + ``repeats`` rounds.

    Returns the wall times of the last ``repeats`` rounds, per name, in round
    order, so that ratios can be taken round by round.
    """
    times = {name: [] for name in fns}
    for round_idx in range(warmup + repeats):
        for name, fn in fns.items():
            elapsed = _timed(fn, device)
            if round_idx >= warmup:
                times[name].append(elapsed)
    return times


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


def peak_memory_bytes(fn: Callable[[], None], device: str) -> int:
    """Most tensor memory held at once by ``fn`` above the level at its start."""
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return max(0, torch.cuda.max_memory_allocated() - base)
    from torch.profiler import ProfilerActivity, profile
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU],
                                  profile_memory=True) as prof:
        fn()
    events = [(event.start_ns(), event.nbytes())
              for event in prof.profiler.kineto_results.events()
              if event.name() == MEMORY_EVENT_NAME]
    return peak_from_memory_events(events)


@contextmanager
def _quiet_stderr():
    """Silence kineto's start/stop lines on file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


# ----------------------------------------------------------------------------
# The steps and stages
# ----------------------------------------------------------------------------
def _leaf(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().requires_grad_(tensor.is_floating_point())


def _leaves(tensors):
    return tuple(_leaf(t) for t in tensors)


class DAFSteps:
    """The timed closures for one model and batch.

    Every closure zeroes the gradients it produced (``set_to_none``) so that
    rounds are alike. ``autocast`` wraps forward passes when ``amp`` is set.
    """

    def __init__(self, model, inputs, labels, samples, device: str, amp: bool):
        self.model = model
        self.inputs = inputs
        self.labels = labels
        self.samples = samples
        self.device = device
        if amp:
            dtype = torch.float16 if device.startswith('cuda') else torch.bfloat16
            self.autocast = lambda: torch.autocast(device.split(':')[0], dtype=dtype)
        else:
            self.autocast = nullcontext
        self.height, self.width = inputs.shape[-2:]
        self._prepare_stage_inputs()

    # -- whole steps -------------------------------------------------------
    def _backward(self, loss: torch.Tensor) -> None:
        loss.backward()
        self.model.zero_grad(set_to_none=True)

    def backbone_train(self) -> None:
        """T_b: student backbone + GAP + FC + CE, forward and backward."""
        self.model.train()
        with self.autocast():
            feats = self.model.backbone(self.inputs)
            logits = self.model.student_logits(feats)
        self._backward(F.cross_entropy(logits.float(), self.labels))

    def teacher_backbone_train(self) -> None:
        """The teacher backbone on the 5-channel input, forward and backward."""
        self.model.train()
        with self.autocast():
            feats = self.model.teacher.backbone(self.teacher_in)
        self._backward(feats[-1].float().mean())

    def parts_backbone_train(self) -> None:
        """The part images' pass alone: backbone + head + CE on B*N images."""
        self.stage_part_backbone()

    def daf_train(self) -> None:
        """T_daf: forward and backward of ``model.loss``."""
        self.model.train()
        with self.autocast():
            losses = self.model.loss(self.inputs, self.samples)
        total = sum(value for name, value in losses.items() if name.startswith('loss'))
        self._backward(total)

    @torch.no_grad()
    def backbone_predict(self) -> None:
        self.model.eval()
        with self.autocast():
            self.model.student_logits(self.model.backbone(self.inputs))

    @torch.no_grad()
    def daf_predict(self) -> None:
        self.model.eval()
        with self.autocast():
            self.model.predict_logits(self.inputs)

    # -- stage inputs --------------------------------------------------------
    def _prepare_stage_inputs(self) -> None:
        """One real student pass gives every stage its inputs."""
        model = self.model
        model.train()
        with torch.no_grad(), self.autocast():
            self.student = model.run_student(self.inputs)
            if model.with_sppn:
                self.part_imgs = self._compose_part_images()
                part_logits = model.student_logits(model.backbone(self.part_imgs))
                self.part_logits = part_logits.view(self.inputs.shape[0], -1,
                                                    part_logits.shape[-1])
            if model.with_teacher:
                self.teacher_in, self.saliency = model.teacher_input(self.inputs,
                                                                     self.student)
                self.teacher_feats = model.teacher.backbone(self.teacher_in)
                self.teacher_logits = model.teacher(self.teacher_in, self.saliency).logits

    def _compose_part_images(self) -> torch.Tensor:
        # What DAFClassifier.part_logits does before its backbone pass.
        return self.model.part_image_generator(self.inputs, self.student.boxes)

    # -- stages --------------------------------------------------------------
    def stages(self) -> Dict[str, Callable[[], None]]:
        """Stage name -> closure, only for the parts the config switches on."""
        model = self.model
        stages = {'student backbone + head': self.backbone_train}
        if model.location_heatmap is not None:
            stages['location heatmap'] = self.stage_heatmap
        if model.with_sppn:
            stages['SPPN (FPN, head, propose incl. NMS)'] = self.stage_sppn
            stages['part images (compose, resize)'] = self.stage_part_images
            stages['part backbone pass (B*N)'] = self.stage_part_backbone
            if model.sppn_head.rank_samples > 0:
                stages['ranked anchor samples (B*K, forward only)'] = \
                    self.stage_rank_samples
            stages['student losses (CE, rank, IoU, area, con)'] = self.stage_student_losses
        if model.with_teacher:
            stages['teacher input (heatmap up, box mask)'] = self.stage_teacher_input
            stages['teacher backbone (5 ch)'] = self.teacher_backbone_train
            stages['PAF-bilinear neck + teacher head'] = self.stage_paf_bilinear
        if model.with_distill:
            stages['distillation (hint regressor, KL)'] = self.stage_distill
        if model.with_fusion:
            stages['fusion head (CSF)'] = self.stage_fusion
        return stages

    def stage_heatmap(self) -> None:
        with self.autocast():
            self.model.location_heatmap(self.student.feats, (self.height, self.width))

    def stage_sppn(self) -> None:
        self.model.train()
        with self.autocast():
            outputs = self.model.propose_parts(_leaves(self.student.feats),
                                               (self.height, self.width),
                                               self.student.object_mask)
        self._backward(sum(output.float().sum() for output in outputs
                           if output is not None))

    def sppn_detail(self, warmup: int, repeats: int) -> Dict[str, float]:
        """Forward-only split of the SPPN stage (median seconds, no grad).

        ``fpn``: the FPN neck; ``head convs``: the dense score/delta convs;
        ``propose post-processing``: ``propose`` minus its dense convs (anchors,
        candidate mask, top-k, decode, NMS, pick N); ``NMS``: the head's
        ``_nms_survivors`` alone, timed by wrapping it on this instance.
        """
        model = self.model
        head = model.sppn_head
        img_shape = (self.height, self.width)
        with torch.no_grad(), self.autocast():
            fpn_feats = model.sppn_neck(self.student.feats)
        nms_times = []
        original_nms = head._nms_survivors

        def timed_nms(*args, **kwargs):
            start = time.perf_counter()
            out = original_nms(*args, **kwargs)
            _sync(self.device)
            nms_times.append(time.perf_counter() - start)
            return out

        @torch.no_grad()
        def fpn():
            with self.autocast():
                model.sppn_neck(self.student.feats)

        @torch.no_grad()
        def head_convs():
            with self.autocast():
                head(fpn_feats)

        @torch.no_grad()
        def propose():
            with self.autocast():
                head.propose(fpn_feats, img_shape, self.student.object_mask)

        head._nms_survivors = timed_nms
        try:
            times = interleaved_times(dict(fpn=fpn, head_convs=head_convs,
                                           propose=propose), self.device, warmup, repeats)
        finally:
            del head._nms_survivors  # back to the class's method
        medians = {name: statistics.median(values) for name, values in times.items()}
        return {'fpn': medians['fpn'], 'head convs': medians['head_convs'],
                'propose post-processing':
                    medians['propose'] - medians['head_convs'],
                'NMS': statistics.median(nms_times[warmup:] or nms_times)}

    @torch.no_grad()
    def stage_part_images(self) -> None:
        with self.autocast():
            self._compose_part_images()

    def stage_part_backbone(self) -> None:
        self.model.train()
        num_parts = self.student.boxes.shape[1]
        # As DAFClassifier.part_logits: no graph through the backbone when the
        # part losses do not train it.
        no_backbone_grad = torch.no_grad() if part_pass_is_forward_only(self.model) \
            else nullcontext()
        with self.autocast():
            with no_backbone_grad:
                feats = self.model.backbone(self.part_imgs)
            logits = self.model.student_logits(feats)
        self._backward(F.cross_entropy(logits.float(),
                                       self.labels.repeat_interleave(num_parts)))

    @torch.no_grad()
    def stage_rank_samples(self) -> None:
        # What the training step adds with SPPNHead(rank_samples=K): K
        # single-box part images per image through the student, no gradient
        # (the draw itself is in the SPPN stage).
        self.model.train()
        with self.autocast():
            self.model.single_box_ce(self.inputs, self.student.sample_boxes, self.labels)

    def stage_student_losses(self) -> None:
        model = self.model
        logits = _leaf(self.student.logits.float())
        part_logits = _leaf(self.part_logits.float())
        boxes = _leaf(self.student.boxes.float())
        scores = _leaf(self.student.box_scores.float())
        num_parts = part_logits.shape[1]
        total = model.head._get_loss(logits, self.samples)['loss']
        part_ce = F.cross_entropy(part_logits.flatten(0, 1),
                                  self.labels.repeat_interleave(num_parts),
                                  reduction='none').view(-1, num_parts)
        total = total + sum(model.sppn_head.loss(boxes, scores, part_ce,
                                                 self.student.object_area).values())
        if model.loss_concentrate is not None:
            total = total + model.loss_concentrate(part_logits, self.labels)
        self._backward(total)

    @torch.no_grad()
    def stage_teacher_input(self) -> None:
        self.model.teacher_input(self.inputs, self.student)

    def stage_paf_bilinear(self) -> None:
        self.model.train()
        teacher = self.model.teacher
        feats = _leaves(self.teacher_feats)
        with self.autocast():
            pooled, grouping_loss = teacher.neck(feats, saliency_mask=self.saliency,
                                                 return_grouping_loss=True)
            logits = teacher.head(pooled)
        loss = teacher.head._get_loss(logits.float(), self.samples)['loss']
        if grouping_loss is not None:
            loss = loss + grouping_loss.float()
        self._backward(loss)

    def stage_distill(self) -> None:
        model = self.model
        student_feat = _leaf(self.student.feats[model.distill_cfg['student_index']])
        teacher_feat = self.teacher_feats[model.distill_cfg['teacher_index']]
        student_logits = _leaf(self.student.logits.float())
        with self.autocast():
            hint_pred = model.hint_regressor(student_feat)
        loss = model.loss_hint(hint_pred.float(), teacher_feat.float()) + \
            model.loss_soft(student_logits, self.teacher_logits.float())
        self._backward(loss)

    def stage_fusion(self) -> None:
        model = self.model
        fused = model.fused_logits(_leaf(self.student.logits.float()),
                                   _leaf(self.teacher_logits.float()))
        self._backward(model.fusion_head._get_loss(fused, self.samples)['loss'])


# ----------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------
def _machine(device: str) -> dict:
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
    """Measure everything described in the module docstring; return the JSON dict."""
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

    train_fns = {'backbone_train': steps.backbone_train, 'daf_train': steps.daf_train}
    if model.with_sppn:
        train_fns['parts_backbone_train'] = steps.parts_backbone_train
    if model.with_teacher:
        train_fns['teacher_backbone_train'] = steps.teacher_backbone_train
    log(f'timing train steps: {list(train_fns)} x ({warmup} warm-up + {repeats}) rounds')
    train = interleaved_times(train_fns, device, warmup, repeats)
    predict = interleaved_times(
        {'backbone_predict': steps.backbone_predict, 'daf_predict': steps.daf_predict},
        device, warmup, repeats)

    teacher_factor = 1.0
    if model.with_teacher:
        teacher_factor = median_ratio(train['teacher_backbone_train'],
                                      train['backbone_train'])
    forward_only = part_pass_is_forward_only(model)
    passes = backbone_pass_equivalents(num_parts, part_scale, model.with_sppn,
                                       model.with_teacher, teacher_factor, forward_only)
    passes_nominal = backbone_pass_equivalents(num_parts, part_scale, model.with_sppn,
                                               model.with_teacher, 1.0, forward_only)
    infer_passes = 2.0 if model.with_teacher else 1.0
    # The passes as measured, each at its own batch size (B*N for the parts).
    pass_names = [name for name in ('backbone_train', 'parts_backbone_train',
                                    'teacher_backbone_train') if name in train]
    train_ratio = median_ratio(train['daf_train'], train['backbone_train'], passes)
    result = dict(
        config=config, device=device, amp=amp, size=size, batch=batch, repeats=repeats,
        warmup=warmup, machine=_machine(device), loadavg_start=list(loadavg_start),
        num_parts=num_parts, part_scale=part_scale, with_sppn=model.with_sppn,
        parts_forward_only=forward_only,
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
        pass_ratio=median_ratio(train['daf_train'], _sum_rounds(train, pass_names)),
    )
    result['pass_overhead'] = result['pass_ratio'] - 1.0

    if flops:
        step_fns = {**train_fns, 'backbone_predict': steps.backbone_predict,
                    'daf_predict': steps.daf_predict}
        step_flops = {name: count_flops(fn) for name, fn in step_fns.items()}
        flops_teacher_factor = 1.0
        if model.with_teacher:
            flops_teacher_factor = (step_flops['teacher_backbone_train']
                                    / step_flops['backbone_train'])
        flops_passes = backbone_pass_equivalents(num_parts, part_scale, model.with_sppn,
                                                 model.with_teacher, flops_teacher_factor,
                                                 forward_only)
        result['flops'] = step_flops
        result['flops_passes_train'] = flops_passes
        result['flops_train_ratio'] = step_flops['daf_train'] / (
            flops_passes * step_flops['backbone_train'])
        result['flops_infer_ratio'] = step_flops['daf_predict'] / (
            infer_passes * step_flops['backbone_predict'])

    if breakdown:
        stage_fns = steps.stages()
        log(f'timing {len(stage_fns)} stages x ({warmup} warm-up + {repeats}) rounds')
        stage_times = interleaved_times(stage_fns, device, warmup, repeats)
        rows = []
        for name, values in stage_times.items():
            row = dict(stage=name, group=STAGE_GROUPS[name],
                       time_s=statistics.median(values))
            if memory:
                row['peak_mem_mib'] = peak_memory_bytes(stage_fns[name], device) / MIB
            if flops:
                row['flops'] = count_flops(stage_fns[name])
                row['gflops'] = row['flops'] / 1e9
            rows.append(row)
        stage_sum = sum(row['time_s'] for row in rows)
        daf_time = result['times_s']['daf_train']
        for row in rows:
            row['share_of_daf'] = row['time_s'] / daf_time
        groups = {}
        for row in rows:
            groups[row['group']] = groups.get(row['group'], 0.0) + row['time_s']
        result['breakdown'] = rows
        result['breakdown_groups_s'] = groups
        result['breakdown_sum_s'] = stage_sum
        if flops:
            # Stages are FLOP-complete: their sum equals the DAF step's count.
            result['breakdown_flops_sum'] = sum(row['flops'] for row in rows)
        result['breakdown_unattributed_s'] = daf_time - stage_sum
        if model.with_sppn:
            result['sppn_forward_detail_s'] = steps.sppn_detail(warmup, repeats)
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


def format_table(result: dict) -> str:
    """The human-readable summary printed by the script."""
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
        f"P = 1 + N*scale^2*share + teacher = 1 + {result['num_parts']}*"
        f"{result['part_scale']:g}^2*{share:.3g} + {result['teacher_factor']:.3f} (measured) "
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
    return '/'.join(f'{value:.2f}' for value in load)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
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
                        help='timed rounds (default 5; 3 with --quick)')
    parser.add_argument('--warmup', type=int, default=None,
                        help='untimed rounds first (default 1)')
    parser.add_argument('--quick', action='store_true',
                        help=f'{QUICK_CONFIG}, size 128, batch 2, 3 repeats, 1 thread '
                        '(about 1 min on 2 busy CPU cores)')
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


def flops_only(config: str, size: int, batch: int,
               cfg_options: Optional[dict] = None) -> dict:
    """FLOP counts of the steps and stages, nothing timed (CPU)."""
    model = build_daf_model(config, 'cpu', cfg_options)
    inputs, labels, samples = make_batch(model, batch, size, 'cpu')
    steps = DAFSteps(model, inputs, labels, samples, 'cpu', amp=False)
    step_fns = dict(backbone_train=steps.backbone_train, daf_train=steps.daf_train,
                    backbone_predict=steps.backbone_predict, daf_predict=steps.daf_predict)
    result = dict(config=config, size=size, batch=batch, cfg_options=cfg_options or {},
                  flops={name: count_flops(fn) for name, fn in step_fns.items()},
                  stage_gflops={name: count_flops(fn) / 1e9
                                for name, fn in steps.stages().items()})
    backbone = result['flops']['backbone_train'] / 1e9
    result['stage_backbone_passes'] = {name: value / backbone
                                       for name, value in result['stage_gflops'].items()}
    return result


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.flops_only:
        result = flops_only(args.config, args.size, args.batch, args.cfg_options)
        print(f"{'stage':<46}{'GFLOP':>10}{'backbone passes':>17}")
        for name, value in result['stage_gflops'].items():
            print(f"{name:<46}{value:>10.3f}{result['stage_backbone_passes'][name]:>17.3f}")
        for name, value in result['flops'].items():
            print(f'{name:<46}{value / 1e9:>10.3f}')
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
