"""The timed steps of ``benchmarks/speed.py`` and the per-stage breakdown.

:class:`DAFSteps` holds, for one model and batch, the whole steps (the plain
student's train step ``T_b``, the DAF step ``T_daf``, the part and teacher
passes alone, the two predictions) and one closure per stage of the DAF step.
Each stage is timed alone by calling the classifier's pieces on the inputs a
real step gives them (forward + backward where the stage has parameters or
carries gradient). :func:`measure_breakdown` times the stages and adds their
peak memory and FLOPs; the stages are FLOP-complete: their FLOPs add up to the
DAF step's.
"""
import statistics
import time
from contextlib import nullcontext
from typing import Callable, Dict, Iterable, Tuple

import torch
import torch.nn.functional as F

from benchmarks.speed_flops import count_flops
from benchmarks.speed_model import part_pass_is_forward_only, part_pass_share
from benchmarks.speed_timing import (
    MIB,
    interleaved_times,
    peak_memory_bytes,
    synchronize,
)
from mmdaf.models.utils.batch_norm_stats import record_batch_norm_stats
from mmdaf.models.utils.ranking_batch import RankingBatch, per_box_cross_entropy

# Breakdown rows: (stage name, group reported in the summary).
# The ranking target's own student passes, forward only (the sampled anchors'
# images and, with WindowRankTarget, the proposals' windows); the name is kept
# so that results stay comparable.
RANK_SAMPLES_STAGE = 'ranked anchor samples (B*K, forward only)'
PART_POOL_STAGE = 'pooled cross entropy (part_pool)'
PART_IMAGES_STAGE = 'part images (compose, resize)'
PART_PASS_STAGE = 'part backbone pass (B*N)'

STAGE_GROUPS = {
    'student backbone + head': 'backbone passes',
    'location heatmap': 'heatmap',
    'SPPN (FPN, head, propose incl. NMS)': 'SPPN incl. NMS',
    'part images (compose, resize)': 'part images',
    'part backbone pass (B*N)': 'backbone passes',
    RANK_SAMPLES_STAGE: 'ranked samples',
    PART_POOL_STAGE: 'losses',
    'student losses (CE, rank, IoU, area, con)': 'losses',
    'teacher input (heatmap up, box mask)': 'teacher input',
    'teacher backbone (5 ch)': 'backbone passes',
    'PAF-bilinear neck + teacher head': 'PAF-bilinear',
    'distillation (hint regressor, KL)': 'losses',
    'fusion head (CSF)': 'losses',
}


def _leaf(tensor: torch.Tensor) -> torch.Tensor:
    """A detached copy that collects gradient (floating point only), so that a
    stage's backward pass stops at its inputs."""
    return tensor.detach().requires_grad_(tensor.is_floating_point())


def _leaves(tensors: Iterable[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
    """:func:`_leaf` of every tensor."""
    return tuple(_leaf(t) for t in tensors)


def rank_target_runs_passes(model) -> bool:
    """Whether the model's ranking target runs student passes of its own on a
    ranking step: a target that does not read the part images
    (``WindowRankTarget``: one pass over the N + K windows) always, one that
    does (``PartImageRankTarget``: the proposals' targets come from the part
    pass) only for the K sampled anchors' single-box part images
    (``SPPNHead(rank_samples=K)``)."""
    if not model.with_sppn or learns_from_labels(model):
        return False
    return model.sppn_head.rank_samples > 0 or not model.rank_target.uses_part_images


def learns_from_labels(model) -> bool:
    """Whether the proposal head ranks nothing and learns from the labels
    (``PartDiscoveryHead``)."""
    return getattr(model.sppn_head, 'learns_from_labels', False)


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
        # SPPNHead(rank_interval=k) ranks sampled anchors on every k-th step
        # only, so one DAF step is not like the next: ``daf_train`` runs a
        # whole cycle of k steps, and its time and FLOPs are divided by k.
        self.daf_cycle = 1
        if model.with_sppn and model.sppn_head.rank_samples > 0:
            self.daf_cycle = model.sppn_head.rank_interval
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
        """T_daf: forward and backward of ``model.loss``, ``daf_cycle`` times."""
        self.model.train()
        for _ in range(self.daf_cycle):
            with self.autocast():
                losses = self.model.loss(self.inputs, self.samples)
            total = sum(value for name, value in losses.items()
                        if name.startswith('loss'))
            self._backward(total)

    def per_step_factor(self, name: str) -> float:
        """How many times per DAF step a timed closure's work happens: 1/k for
        a whole ``daf_train`` cycle and for the ranking target's passes of
        ``rank_interval`` k (only the steps with samples rank), the share of
        steps that run it for the part pass (:func:`part_pass_share`), else 1."""
        if name in ('daf_train', RANK_SAMPLES_STAGE):
            return 1.0 / self.daf_cycle
        if name in (PART_IMAGES_STAGE, PART_PASS_STAGE):
            return part_pass_share(self.model)
        return 1.0

    @torch.no_grad()
    def backbone_predict(self) -> None:
        """The plain student's prediction, eval mode, no grad."""
        self.model.eval()
        with self.autocast():
            self.model.student_logits(self.model.backbone(self.inputs))

    @torch.no_grad()
    def daf_predict(self) -> None:
        """DAF's prediction (``predict_logits``), eval mode, no grad."""
        self.model.eval()
        with self.autocast():
            self.model.predict_logits(self.inputs)

    # -- stage inputs --------------------------------------------------------
    def _prepare_stage_inputs(self) -> None:
        """One real student pass gives every stage its inputs."""
        model = self.model
        model.train()
        # The proposals' part-image cross entropy, as DAFClassifier.sppn_loss
        # gives it to the ranking target (None on steps without a part pass).
        self.part_ce = None
        with torch.no_grad(), self.autocast():
            # The clean pass's BatchNorm statistics, with which the step
            # normalises the part images and the ranking target's images.
            with record_batch_norm_stats(model.backbone) as clean_bn_stats:
                self.student = model.run_student(self.inputs)
            self.clean_bn_stats = clean_bn_stats
            if part_pass_share(model) > 0:
                self.part_imgs = self._compose_part_images()
                part_logits = model.student_logits(model.backbone(self.part_imgs))
                self.part_logits = part_logits.view(self.inputs.shape[0], -1,
                                                    part_logits.shape[-1])
                self.part_ce = per_box_cross_entropy(part_logits, self.labels,
                                                     self.part_logits.shape[1])
            if model.with_teacher:
                self.teacher_in, self.saliency = model.teacher.build_input(
                    self.inputs, self.student.heatmap, self.student.boxes, self.samples)
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
        if model.part_pool is not None:
            stages[PART_POOL_STAGE] = self.stage_part_pool
        if model.with_sppn:
            stages['SPPN (FPN, head, propose incl. NMS)'] = self.stage_sppn
            if part_pass_share(model) > 0:
                stages[PART_IMAGES_STAGE] = self.stage_part_images
                stages[PART_PASS_STAGE] = self.stage_part_backbone
            if rank_target_runs_passes(model):
                stages[RANK_SAMPLES_STAGE] = self.stage_rank_samples
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
            synchronize(self.device)
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
        # What a ranking step adds: the model's rank_target on the step's
        # RankingBatch, as DAFClassifier.sppn_loss calls it. WindowRankTarget:
        # the N + K windows through the student; PartImageRankTarget: the K
        # sampled anchors' single-box part images (the proposals' targets are
        # the part pass's). No gradient; the draw itself is in the SPPN stage.
        model = self.model
        model.train()
        with self.autocast():
            model.rank_target(RankingBatch(
                self.inputs, self.labels, self.student.boxes, self.student.sample_boxes,
                self.part_ce,
                lambda images: model.classify_part_images(images, self.clean_bn_stats),
                model.part_image_generator))

    def stage_part_pool(self) -> None:
        # The student head on the last stage pooled in the part_pool regions,
        # its cross entropy (PooledPartHead.loss; not the sampled anchors' of
        # part_pool.samples) and the backward to the last stage.
        model = self.model
        feats = tuple(self.student.feats[:-1]) + (_leaf(self.student.feats[-1]), )
        student = self.student._replace(feats=feats)
        img_shape = (self.height, self.width)
        with self.autocast():
            pooled = model.pooled_part_logits(student, img_shape, self.samples)
        losses = model.part_pool.loss(pooled, self.labels, model.head, feats[-1], img_shape)
        self._backward(sum(losses.values()))

    def stage_student_losses(self) -> None:
        model = self.model
        logits = _leaf(self.student.logits.float())
        boxes = _leaf(self.student.boxes.float())
        scores = _leaf(self.student.box_scores.float())
        total = model.head._get_loss(logits, self.samples)['loss']
        # Without the part pass the proposals' ranking target is their
        # windows' cross entropy, a no-gradient tensor like this one.
        part_ce = scores.detach().new_zeros(scores.shape)
        part_logits = None
        if part_pass_share(model) > 0:
            part_logits = _leaf(self.part_logits.float())
            num_parts = part_logits.shape[1]
            part_ce = F.cross_entropy(part_logits.flatten(0, 1),
                                      self.labels.repeat_interleave(num_parts),
                                      reduction='none').view(-1, num_parts)
        if learns_from_labels(model):
            # Its forward again on the (detached) stages, as DAFClassifier.sppn_loss.
            head_losses = model.sppn_head.loss_by_labels(
                model.proposal_features(_leaves(self.student.feats)), self.labels)
            total = total + sum(value for key, value in head_losses.items()
                                if key.startswith('loss'))
        else:
            total = total + sum(model.sppn_head.loss(boxes, scores, part_ce,
                                                     self.student.object_area).values())
        if model.loss_concentrate is not None:
            total = total + model.loss_concentrate(part_logits, self.labels)
        self._backward(total)

    @torch.no_grad()
    def stage_teacher_input(self) -> None:
        self.model.teacher.build_input(self.inputs, self.student.heatmap,
                                       self.student.boxes, self.samples)

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
        # DAFDistiller.loss: the hint regressor on the student's hint stage,
        # the hint and soft-target losses, gated; the teacher side detached.
        distill = self.model.distill
        student_feats = list(self.student.feats)
        student_feats[distill.student_index] = _leaf(student_feats[distill.student_index])
        with self.autocast():
            losses = distill.loss(student_feats, _leaf(self.student.logits.float()),
                                  self.teacher_feats, self.teacher_logits.float(),
                                  self.labels)
        self._backward(sum(value.float() for name, value in losses.items()
                           if name.startswith('loss')))

    def stage_fusion(self) -> None:
        model = self.model
        fused = model.fusion_head((_leaf(self.student.logits.float()),
                                   _leaf(self.teacher_logits.float())))
        self._backward(model.fusion_head._get_loss(fused, self.samples)['loss'])


def measure_breakdown(steps: DAFSteps, daf_time: float, warmup: int, repeats: int,
                      memory: bool, flops: bool,
                      log: Callable[[str], None] = print) -> dict:
    """Time every stage of the DAF step alone, in interleaved rounds.

    Args:
        steps (DAFSteps): the model's steps and stages.
        daf_time (float): T_daf, the median DAF step time, for the shares.
        warmup (int): untimed rounds first.
        repeats (int): timed rounds.
        memory (bool): add each stage's peak memory (MiB).
        flops (bool): add each stage's FLOP count.
        log (callable): progress messages.

    Returns:
        dict: ``breakdown`` (one row per stage: stage, group, time_s and, where
        asked, peak_mem_mib, flops, gflops; then share_of_daf),
        ``breakdown_groups_s``, ``breakdown_sum_s``, ``breakdown_flops_sum``
        (with ``flops``), ``breakdown_unattributed_s`` (T_daf minus the sum)
        and, for a model with an SPPN, ``sppn_forward_detail_s``.
    """
    device = steps.device
    stage_fns = steps.stages()
    log(f'timing {len(stage_fns)} stages x ({warmup} warm-up + {repeats}) rounds')
    stage_times = interleaved_times(stage_fns, device, warmup, repeats)
    rows = []
    for name, values in stage_times.items():
        # Per DAF step: the ranked samples run on every k-th step only.
        factor = steps.per_step_factor(name)
        row = dict(stage=name, group=STAGE_GROUPS[name],
                   time_s=statistics.median(values) * factor, per_step_factor=factor)
        if memory:
            row['peak_mem_mib'] = peak_memory_bytes(stage_fns[name], device) / MIB
        if flops:
            row['flops'] = count_flops(stage_fns[name]) * factor
            row['gflops'] = row['flops'] / 1e9
        rows.append(row)
    stage_sum = sum(row['time_s'] for row in rows)
    for row in rows:
        row['share_of_daf'] = row['time_s'] / daf_time
    groups = {}
    for row in rows:
        groups[row['group']] = groups.get(row['group'], 0.0) + row['time_s']
    result = dict(breakdown=rows, breakdown_groups_s=groups, breakdown_sum_s=stage_sum)
    if flops:
        # Stages are FLOP-complete: their sum equals the DAF step's count.
        result['breakdown_flops_sum'] = sum(row['flops'] for row in rows)
    result['breakdown_unattributed_s'] = daf_time - stage_sum
    if steps.model.with_sppn and not learns_from_labels(steps.model):
        result['sppn_forward_detail_s'] = steps.sppn_detail(warmup, repeats)
    return result
