"""DAF-net: the classifier that builds its parts from config and calls them."""
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.classifiers import BaseClassifier
from mmpretrain.registry import MODELS, TASK_UTILS
from mmpretrain.structures import DataSample
from torch import Tensor

from ..heads.daf_distiller import rename_legacy_distill_keys
from ..utils.batch_norm_stats import clean_stats_context, record_batch_norm_stats
from ..utils.grad_scale import scale_gradient
from ..utils.prediction_fields import set_prediction_fields
from ..utils.ranking_batch import RankingBatch, per_box_cross_entropy
from ..utils.stage_features import check_stage_features
from ..utils.student_output import StudentOutput

LOSS_GROUPS = ('student', 'teacher', 'fusion')


def global_average_pool(feat: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, C)."""
    return feat.mean(dim=(2, 3))


def weighted(losses: Dict[str, Tensor], weight: float) -> Dict[str, Tensor]:
    """``losses`` with every ``loss*`` entry multiplied by ``weight`` (the
    logged metrics, such as accuracies, unchanged)."""
    return {key: weight * value if key.startswith('loss') else value
            for key, value in losses.items()}


def _build(cfg: Optional[dict], default_type: Optional[str] = None,
           registry=MODELS) -> Optional[nn.Module]:
    """``registry.build(cfg)``; None and modules pass through; a dict
    without ``type`` gets ``default_type``."""
    if cfg is None or isinstance(cfg, nn.Module):
        return cfg
    cfg = dict(cfg)
    if default_type is not None:
        cfg.setdefault('type', default_type)
    return registry.build(cfg)


@MODELS.register_module()
class DAFClassifier(BaseClassifier):
    """DAF-net (Dual Attention Fusion) for fine-grained classification.

    Each part is a registered component built from its config; a part set to
    None is switched off, so that the paper's ablations (Table 3) are configs:
    the student alone (the baseline), ``+ SPPN`` (``sppn_neck``,
    ``sppn_head``), ``+ LHM`` (``location_heatmap``), ``+ teacher``
    (``teacher``, ``fusion_head``) and ``+ distillation`` (``distill``).

    Training step (:meth:`loss`; B images of H x W, N parts, K classes):

    1. student backbone -> (C3, C4, C5); GAP(C5) -> student head -> z_s,
       ``loss_pred``;
    2. ``location_heatmap`` on (C3, C4, C5): heatmap, object mask, object
       area S;
    3. ``sppn_neck`` + ``sppn_head``: N proposals (B, N, 4) with their
       scores, and on sampling steps K sampled anchors;
    4. ``part_pool``: the student head on C5 pooled in part regions,
       ``loss_part_pool``; under its ``predict`` z_s becomes the mean of the
       image's and the pooled logits;
    5. the part pass: the N part images through the student in one batch
       (when ``loss_concentrate`` or the ranking target reads them);
       ``rank_target`` orders the proposals and samples; the SPPN's
       ``loss_rank``, ``loss_overlap``, ``loss_area`` and ``loss_con``;
    6. ``teacher`` on (image, heatmap, box mask) -> z_t, ``loss_teacher``,
       ``loss_group``;
    7. ``distill``: ``loss_hint`` and ``loss_soft``;
    8. ``fusion_head`` on (z_s, z_t): ``loss_csf``.

    The total is ``a * L_student + b * L_teacher + c * L_csf`` with
    ``loss_weights=dict(student=a, teacher=b, fusion=c)``; the SPPN's losses
    are also scaled by ``part_loss_scale`` (``PartLossWarmupHook``). Each loss
    is returned weighted, under its own name.

    Prediction returns the fused score as ``pred_score`` (the teacher's, then
    the student's, when a part is off), plus ``student_score``,
    ``teacher_score``, ``part_boxes`` (N, 4), ``part_scores`` (N,) and
    ``heatmap`` (1, H/8, W/8) on each data sample.

    Args:
        backbone (dict): student backbone returning (C3, C4, C5).
        head (dict): student head on GAP(C5); its loss is L_pred.
        location_heatmap (dict, optional): ``LocationHeatmap``.
        sppn_neck (dict, optional): mmdet neck on (C3, C4, C5), e.g. ``FPN``
            (``_scope_='mmdet'``).
        sppn_head (dict, optional): ``SPPNHead`` (``_scope_='mmdet'``), or a
            head that learns from the labels instead of a ranking target
            (``learns_from_labels``: ``PartDiscoveryHead``).
        rank_target (dict): what orders the proposals and the sampled anchors
            in ``loss_rank``, a ``TASK_UTILS`` type. Defaults to the paper's
            ``dict(type='PartImageRankTarget')``.
        part_images (dict): ``PartImageGenerator`` config (``type`` optional).
        sppn_detach_input (bool): the SPPN's losses train the SPPN only, not
            the student backbone. Defaults to False (the paper).
        predict_part_top_m (int): M > 0 averages the student's prediction
            with its top-M part images' logits (NTS-Net). Defaults to 0.
        part_backbone_grad_scale (float): factor on the gradient the part
            pass's losses send into the student backbone, in [0, 1].
            Defaults to 1.0 (the paper).
        part_pool (dict, optional): ``PooledPartHead``.
        loss_concentrate (dict, optional): ``ConcentrateLoss`` (L_con).
        teacher (dict, optional): ``DAFTeacher``.
        distill (dict, optional): ``DAFDistiller``.
        fusion_head (dict, optional): ``ClassScoreFusionHead``.
        loss_weights (dict): a, b, c above. Defaults to all 1.
        data_preprocessor (dict, optional): defaults to ``ClsDataPreprocessor``.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 location_heatmap: Optional[dict] = None,
                 sppn_neck: Optional[dict] = None,
                 sppn_head: Optional[dict] = None,
                 rank_target: Optional[dict] = None,
                 part_images: Optional[dict] = None,
                 sppn_detach_input: bool = False,
                 predict_part_top_m: int = 0,
                 part_backbone_grad_scale: float = 1.0,
                 part_pool: Optional[dict] = None,
                 loss_concentrate: Optional[dict] = None,
                 teacher: Optional[dict] = None,
                 distill: Optional[dict] = None,
                 fusion_head: Optional[dict] = None,
                 loss_weights: Optional[Dict[str, float]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        data_preprocessor = data_preprocessor or {}
        if isinstance(data_preprocessor, dict):
            data_preprocessor.setdefault('type', 'ClsDataPreprocessor')
        super().__init__(init_cfg=init_cfg, data_preprocessor=data_preprocessor)
        _check_parts(sppn_neck, sppn_head, teacher, distill, fusion_head,
                     predict_part_top_m, part_backbone_grad_scale)
        # Built in this order: each build draws its random initial weights.
        self.backbone = _build(backbone)
        self.head = _build(head)
        self.location_heatmap = _build(location_heatmap)
        self.sppn_neck = _build(sppn_neck)
        self.sppn_head = _build(sppn_head)
        self.loss_concentrate = _build(loss_concentrate)
        try:
            self.part_image_generator = _build(part_images or {}, 'PartImageGenerator')
        except TypeError as error:
            raise ValueError(f'DAFClassifier: bad part_images config {part_images!r}: '
                             f'{error}') from error
        self.rank_target = _build(rank_target or {}, 'PartImageRankTarget', TASK_UTILS)
        self.part_pool = _build(part_pool, 'PooledPartHead')
        self.teacher = _build(teacher, 'DAFTeacher')
        self.distill = _build(distill, 'DAFDistiller')
        self.fusion_head = _build(fusion_head)
        self.sppn_detach_input = sppn_detach_input
        self.predict_part_top_m = predict_part_top_m
        self.part_backbone_grad_scale = part_backbone_grad_scale
        if self.part_pool is not None:
            self.part_pool.check_sources(self.with_sppn, location_heatmap is not None,
                                         getattr(self.sppn_head, 'rank_samples', 0))
        self.loss_weights = _loss_weights(loss_weights)
        # Set by PartLossWarmupHook; multiplies the SPPN's losses.
        self.part_loss_scale = 1.0
        # Checkpoints saved before the distiller was a component load too.
        self._register_load_state_dict_pre_hook(rename_legacy_distill_keys)

    @property
    def with_sppn(self) -> bool:
        return self.sppn_head is not None

    @property
    def with_teacher(self) -> bool:
        return self.teacher is not None

    @property
    def with_distill(self) -> bool:
        return self.distill is not None

    @property
    def with_fusion(self) -> bool:
        return self.fusion_head is not None

    # ------------------------------------------------------------ the student
    def extract_feat(self, inputs: Tensor, stage: str = 'backbone'):
        """Student features: ``'backbone'`` -> (C3, C4, C5); ``'pre_logits'``
        -> GAP(C5) (B, C)."""
        if stage not in ('backbone', 'pre_logits'):
            raise ValueError(f'stage must be "backbone" or "pre_logits", got {stage!r}')
        feats = check_stage_features(self.backbone(inputs), self.backbone,
                                     role='student backbone')
        return feats if stage == 'backbone' else global_average_pool(feats[-1])

    def student_logits(self, feats: Sequence[Tensor]) -> Tensor:
        """(C3, C4, C5) -> (B, K) logits of the student head on GAP(C5)."""
        return self.head((global_average_pool(feats[-1]), ))

    def run_student(self, inputs: Tensor) -> StudentOutput:
        """Student backbone and head, location heatmap, SPPN proposals."""
        batch_size, _, height, width = inputs.shape
        feats = self.extract_feat(inputs)
        logits = self.student_logits(feats)
        heatmap = object_mask = None
        object_area = inputs.new_full((batch_size, ), float(height * width))
        if self.location_heatmap is not None:
            heat = self.location_heatmap(feats, (height, width))
            heatmap, object_mask, object_area = heat.heatmap, heat.object_mask, \
                heat.object_area
        parts = (None, None, None, None)
        if self.with_sppn:
            parts = self.propose_parts(feats, (height, width), object_mask)
        return StudentOutput(feats, logits, heatmap, object_mask, object_area, *parts)

    def propose_parts(self, feats: Sequence[Tensor], img_shape: Tuple[int, int],
                      object_mask: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
        """The SPPN on the student stages: (B, N, 4) proposals, (B, N) scores
        and, on a training step that samples, (B, K, 4) sampled anchors and
        (B, K) scores from the same dense pass (else None, None)."""
        sppn_feats = self.proposal_features(feats)
        if self.training and self.sppn_head.samples_this_step():
            return self.sppn_head.propose_and_sample(sppn_feats, img_shape, object_mask)
        boxes, box_scores = self.sppn_head.propose(sppn_feats, img_shape, object_mask)
        return boxes, box_scores, None, None

    def proposal_features(self, feats: Sequence[Tensor]) -> Sequence[Tensor]:
        """The SPPN neck's levels on the student stages (detached from the
        backbone with ``sppn_detach_input``)."""
        if self.sppn_detach_input:
            feats = tuple(feat.detach() for feat in feats)
        return self.sppn_neck(feats)

    def pooled_part_logits(self, student: StudentOutput, img_shape: Tuple[int, int],
                           data_samples: Optional[List[DataSample]]) -> Tensor:
        """(B, M, K) logits of ``part_pool`` on the student's last stage."""
        return self.part_pool(self.head, student.feats[-1], img_shape, student.boxes,
                              student.object_mask, data_samples)

    def part_logits(self, inputs: Tensor, boxes: Tensor,
                    clean_bn_stats: Optional[dict] = None) -> Tensor:
        """(B, N, K) logits of the B*N part images from ONE student pass.

        Args:
            inputs (Tensor): (B, 3, H, W) clean images.
            boxes (Tensor): (B, N, 4) part boxes.
            clean_bn_stats (dict, optional): the clean pass's BatchNorm batch
                statistics, with which the part images are normalised.
        """
        batch_size, num_parts = boxes.shape[:2]
        generator = None
        if not self.training:
            # The same noise in every evaluation (predict_part_top_m).
            generator = torch.Generator(device=inputs.device).manual_seed(0)
        part_imgs = self.part_image_generator(inputs, boxes, generator=generator)
        # Without gradient into the backbone, its part pass keeps no graph.
        grad_context = torch.no_grad() if self.part_backbone_grad_scale == 0 \
            else nullcontext()
        with self._part_bn_context(clean_bn_stats), grad_context:
            feats = self.backbone(part_imgs)
        feats = [scale_gradient(feat, self.part_backbone_grad_scale) for feat in feats]
        return self.student_logits(feats).view(batch_size, num_parts, -1)

    def classify_part_images(self, images: Tensor,
                             clean_bn_stats: Optional[dict] = None) -> Tensor:
        """(M, 3, h, w) images -> (M, K) student logits, normalised as the
        part pass is (the ranking targets' student)."""
        with self._part_bn_context(clean_bn_stats):
            return self.student_logits(self.backbone(images))

    def _part_bn_context(self, clean_bn_stats: Optional[dict]):
        if not self.training:
            return nullcontext()
        return clean_stats_context(self.backbone, clean_bn_stats)

    def _clean_bn_recorder(self):
        if self.training and self.with_sppn:
            return record_batch_norm_stats(self.backbone)
        return nullcontext({})

    # ------------------------------------------------------------ training
    def forward(self, inputs: Tensor, data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor'):
        """``'tensor'``: the logits used for prediction (B, K); ``'loss'``: a
        dict of weighted losses; ``'predict'``: a list of DataSample."""
        if mode == 'tensor':
            return self.predict_logits(inputs, data_samples)[0]
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}".')

    def loss(self, inputs: Tensor, data_samples: List[DataSample]) -> Dict[str, Tensor]:
        """All DAF losses of one batch, each already weighted (see class doc)."""
        labels = torch.cat([sample.gt_label for sample in data_samples])
        img_shape = inputs.shape[-2:]
        with self._clean_bn_recorder() as clean_bn_stats:
            student = self.run_student(inputs)
        weight_s = self.loss_weights['student']
        pred = self.head._get_loss(student.logits, data_samples)
        losses = dict(loss_pred=weight_s * pred.pop('loss'))
        losses.update({f'student_{k}': v for k, v in pred.items()})

        # The fusion head is trained on what the student predicts at test time.
        student_prediction = student.logits
        if self.part_pool is not None:
            pooled = self.pooled_part_logits(student, img_shape, data_samples)
            losses.update(weighted(self.part_pool.loss(
                pooled, labels, self.head, student.feats[-1], img_shape,
                student.sample_boxes), weight_s))
            if self.part_pool.predict:
                student_prediction = torch.cat([student.logits[:, None], pooled],
                                               dim=1).mean(dim=1)

        if self.with_sppn:
            sppn_losses = self.sppn_loss(inputs, student, labels, clean_bn_stats)
            losses.update(weighted(sppn_losses, weight_s * self.part_loss_scale))

        if not self.with_teacher:
            return losses
        teacher_in, saliency = self.teacher.build_input(inputs, student.heatmap,
                                                        student.boxes, data_samples)
        teacher, teacher_losses = self.teacher.loss(teacher_in, saliency, data_samples)
        losses.update(weighted(teacher_losses, self.loss_weights['teacher']))
        if self.with_distill:
            losses.update(weighted(self.distill.loss(
                student.feats, student.logits, teacher.feats, teacher.logits, labels),
                weight_s))
        if self.with_fusion:
            fused = self.fusion_head((student_prediction, teacher.logits))
            fusion_pred = self.fusion_head._get_loss(fused, data_samples)
            losses['loss_csf'] = self.loss_weights['fusion'] * fusion_pred.pop('loss')
            losses.update({f'fusion_{k}': v for k, v in fusion_pred.items()})
        return losses

    def sppn_loss(self, inputs: Tensor, student: StudentOutput, labels: Tensor,
                  clean_bn_stats: Optional[dict]) -> Dict[str, Tensor]:
        """The proposal head's losses and L_con, unweighted: the SPPN's
        ranking (by ``rank_target``), overlap and area, or a head's own
        losses from the labels (``learns_from_labels``, part discovery).
        Runs the part pass when something reads it."""
        learns_from_labels = getattr(self.sppn_head, 'learns_from_labels', False)
        sampling = student.sample_boxes is not None
        ranks = not learns_from_labels and self.sppn_head.ranks(with_samples=sampling)
        part_logits = part_ce = None
        if self.loss_concentrate is not None or (ranks and
                                                 self.rank_target.uses_part_images):
            part_logits = self.part_logits(inputs, student.boxes, clean_bn_stats)
            part_ce = per_box_cross_entropy(part_logits.flatten(0, 1), labels,
                                            part_logits.shape[1])
        if learns_from_labels:
            losses = self.sppn_head.loss_by_labels(self.proposal_features(student.feats),
                                                   labels)
        else:
            losses = self.ranking_losses(inputs, student, labels, part_ce, ranks,
                                         clean_bn_stats)
        if self.loss_concentrate is not None:
            losses['loss_con'] = self.loss_concentrate(part_logits, labels)
        return losses

    def ranking_losses(self, inputs: Tensor, student: StudentOutput, labels: Tensor,
                       part_ce: Optional[Tensor], ranks: bool,
                       clean_bn_stats: Optional[dict]) -> Dict[str, Tensor]:
        """The SPPN's ``loss_rank`` (ordered by ``rank_target`` when the step
        ``ranks``), ``loss_overlap`` and ``loss_area``."""
        proposal_target = sample_target = None
        if ranks:
            proposal_target, sample_target = self.rank_target(RankingBatch(
                inputs, labels, student.boxes, student.sample_boxes, part_ce,
                lambda images: self.classify_part_images(images, clean_bn_stats),
                self.part_image_generator))
        samples = {}
        if sample_target is not None:
            samples = dict(sample_scores=student.sample_scores, sample_ce=sample_target)
        return self.sppn_head.loss(student.boxes, student.box_scores, proposal_target,
                                   student.object_area, **samples)

    # ------------------------------------------------------------ prediction
    def predict_logits(self, inputs: Tensor,
                       data_samples: Optional[List[DataSample]] = None
                       ) -> Tuple[Tensor, Dict[str, Optional[Tensor]]]:
        """The prediction logits and everything shown to users.

        ``data_samples`` are read only by the oracle controls (``gt_bboxes``).

        Returns:
            tuple: (B, K) logits of the best available stream (fused, else
            teacher, else student) and a dict with ``student_logits``,
            ``teacher_logits``, ``part_boxes`` (B,N,4), ``part_scores`` (B,N),
            ``heatmap`` (B,1,H/8,W/8); absent parts are None.
        """
        student = self.run_student(inputs)
        # (B, *, K) logits that the student's prediction averages.
        student_streams = [student.logits[:, None]]
        if self.predict_part_top_m > 0:
            top_m = min(self.predict_part_top_m, student.boxes.shape[1])
            # All N part images, composed as in training; the first M (the
            # best scored) count.
            student_streams.append(self.part_logits(inputs, student.boxes)[:, :top_m])
        if self.part_pool is not None and self.part_pool.predict:
            student_streams.append(self.pooled_part_logits(student, inputs.shape[-2:],
                                                           data_samples))
        if len(student_streams) > 1:
            student = student._replace(
                logits=torch.cat(student_streams, dim=1).mean(dim=1))
        extras = dict(student_logits=student.logits, teacher_logits=None,
                      part_boxes=student.boxes, part_scores=student.box_scores,
                      heatmap=student.heatmap)
        if not self.with_teacher:
            return student.logits, extras
        teacher_in, saliency = self.teacher.build_input(inputs, student.heatmap,
                                                        student.boxes, data_samples)
        teacher_logits = self.teacher(teacher_in, saliency,
                                      with_grouping_loss=False).logits
        extras['teacher_logits'] = teacher_logits
        if not self.with_fusion:
            return teacher_logits, extras
        return self.fusion_head((student.logits, teacher_logits)), extras

    def predict(self, inputs: Tensor, data_samples: Optional[List[DataSample]] = None,
                **kwargs) -> List[DataSample]:
        """Fused prediction; also student/teacher scores, part boxes and scores,
        and the heatmap on each data sample (see class doc)."""
        logits, extras = self.predict_logits(inputs, data_samples)
        return set_prediction_fields(data_samples, logits, extras)


def _check_parts(sppn_neck, sppn_head, teacher, distill, fusion_head,
                 predict_part_top_m: int, part_backbone_grad_scale: float) -> None:
    """Errors for part configs that cannot work together."""
    if (sppn_neck is None) != (sppn_head is None):
        raise ValueError('DAFClassifier: sppn_neck and sppn_head must be set '
                         f'together, got sppn_neck={sppn_neck!r}, sppn_head={sppn_head!r}')
    if distill is not None and teacher is None:
        raise ValueError('DAFClassifier: distill needs a teacher (teacher=None)')
    if fusion_head is not None and teacher is None:
        raise ValueError('DAFClassifier: fusion_head needs a teacher (teacher=None)')
    if predict_part_top_m < 0:
        raise ValueError('DAFClassifier: predict_part_top_m must be >= 0, got '
                         f'{predict_part_top_m}')
    if predict_part_top_m > 0 and sppn_head is None:
        raise ValueError('DAFClassifier: predict_part_top_m needs the SPPN '
                         '(sppn_head=None)')
    if not 0 <= part_backbone_grad_scale <= 1:
        raise ValueError('DAFClassifier: part_backbone_grad_scale must be in '
                         f'[0, 1], got {part_backbone_grad_scale}')


def _loss_weights(loss_weights: Optional[Dict[str, float]]) -> Dict[str, float]:
    weights = dict.fromkeys(LOSS_GROUPS, 1.0)
    unknown = set(loss_weights or {}) - set(LOSS_GROUPS)
    if unknown:
        raise ValueError(f'DAFClassifier: unknown loss_weights keys {sorted(unknown)}; '
                         f'expected some of {LOSS_GROUPS}')
    weights.update(loss_weights or {})
    return weights
