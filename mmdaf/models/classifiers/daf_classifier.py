"""DAF-net: student (heatmap + SPPN + part images), teacher, distillation, fusion."""
from contextlib import ExitStack, nullcontext
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_reduce
from mmengine.model import BaseModule
from mmpretrain.models.classifiers import BaseClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from ..utils.batch_norm_stats import (
    PART_BN_MODES,
    normalise_with_fixed_stats,
    record_batch_norm_stats,
    without_activation_checkpointing,
)
from ..utils.box_pooling import box_pooled_features, mask_pooled_features
from ..utils.grad_scale import scale_gradient
from ..utils.part_consistency import cross_image_box_similarity
from ..utils.part_images import boxes_to_saliency_mask, occluded_images
from ..utils.stage_features import check_stage_features

LOSS_GROUPS = ('student', 'teacher', 'fusion')
DISTILL_GATES = ('all', 'teacher_correct', 'teacher_better', 'teacher_ahead')
PROPOSAL_RANK_CE = ('part_image', 'window')
RANK_TARGETS = ('part_images', 'clean_features', 'occlusion', 'consistency')
RANK_CONTEXTS = ('none', 'image')
PART_POOL_BOXES = ('proposals', 'random', 'ground_truth', 'object',
                   'proposals_and_object')
# part_pool.boxes values that read the location heatmap's object mask.
OBJECT_POOL_BOXES = ('object', 'proposals_and_object')
TEACHER_MASK_BOXES = ('proposals', 'ground_truth')


class StudentOutput(NamedTuple):
    """What the student pass produces for one batch.

    Attributes:
        feats: backbone stages (C3, C4, C5).
        logits: (B, K) student class logits.
        heatmap: (B, 1, h8, w8) location heatmap in [0, 1], or None without LHM.
        object_mask: (B, 1, h8, w8) bool, or None without LHM.
        object_area: (B,) object area S in input pixels.
        boxes: (B, N, 4) part boxes, xyxy input pixels, or None without SPPN.
        box_scores: (B, N) SPPN scores of the boxes (not detached), or None.
        sample_boxes: (B, K, 4) random candidate anchors for the ranking loss
            (training with ``SPPNHead(rank_samples=K)``), else None.
        sample_scores: (B, K) their SPPN scores (not detached), or None.
    """
    feats: Tuple[Tensor, ...]
    logits: Tensor
    heatmap: Optional[Tensor]
    object_mask: Optional[Tensor]
    object_area: Tensor
    boxes: Optional[Tensor]
    box_scores: Optional[Tensor]
    sample_boxes: Optional[Tensor] = None
    sample_scores: Optional[Tensor] = None


class TeacherOutput(NamedTuple):
    """Teacher pass: backbone stages, (B, K) logits, the neck's grouping loss."""
    feats: Tuple[Tensor, ...]
    logits: Tensor
    grouping_loss: Optional[Tensor]


def _build(cfg, registry=MODELS) -> Optional[nn.Module]:
    if cfg is None or isinstance(cfg, nn.Module):
        return cfg
    return registry.build(cfg)


def make_hint_regressor(student_channels: int, teacher_channels: int) -> nn.Module:
    """1x1 conv + BN mapping the student's hint stage onto the teacher's."""
    return nn.Sequential(
        nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(teacher_channels))


def distill_gate(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                 mode: str) -> Tensor:
    """Per-sample weights of the distillation losses, from detached logits.

    Args:
        student_logits (Tensor): (B, K) z_s.
        teacher_logits (Tensor): (B, K) z_t.
        labels (Tensor): (B,) ground-truth classes.
        mode (str): ``'all'`` keeps every sample (the paper);
            ``'teacher_correct'`` keeps the samples whose teacher top-1 is the
            ground truth; ``'teacher_better'`` those where the teacher gives
            the ground truth a higher probability than the student does.

    Returns:
        Tensor: (B,) float weights in {0, 1}.
    """
    if mode == 'all':
        return student_logits.new_ones(student_logits.shape[0])
    if mode == 'teacher_ahead':
        raise ValueError("distill gate 'teacher_ahead' keeps running means: it "
                         'is applied by DAFClassifier.teacher_ahead_gate')
    teacher_logits = teacher_logits.detach().float()
    if mode == 'teacher_correct':
        keep = teacher_logits.argmax(dim=1) == labels
    elif mode == 'teacher_better':
        keep = label_probability(teacher_logits, labels) > \
            label_probability(student_logits, labels)
    else:
        raise ValueError(f'distill gate must be one of {DISTILL_GATES}, got {mode!r}')
    return keep.to(student_logits.dtype)


def label_probability(logits: Tensor, labels: Tensor) -> Tensor:
    """The softmax probability of the ground truth, per sample.

    Args:
        logits (Tensor): (B, K) logits; detached here.
        labels (Tensor): (B,) ground-truth classes.

    Returns:
        Tensor: (B,) float32.
    """
    probs = logits.detach().float().softmax(dim=1)
    return probs.gather(1, labels[:, None]).squeeze(1)


def move_boxes_at_random(boxes: Tensor, img_shape: Tuple[int, int],
                         generator: Optional[torch.Generator] = None) -> Tensor:
    """Each box moved to a uniformly random position inside the image, its
    size kept (clipped to the image): the control for whether positions matter.

    Args:
        boxes (Tensor): (B, M, 4) xyxy boxes, input pixels.
        img_shape (tuple): (H, W) of the input.
        generator (torch.Generator, optional): draws the positions; the
            global generator when None.

    Returns:
        Tensor: (B, M, 4) boxes of the same widths and heights.
    """
    height, width = img_shape
    sizes = torch.stack([(boxes[..., 2] - boxes[..., 0]).clamp(0, width),
                         (boxes[..., 3] - boxes[..., 1]).clamp(0, height)], dim=-1)
    limits = boxes.new_tensor([width, height]) - sizes
    draws = torch.rand(sizes.shape, generator=generator, device=sizes.device,
                       dtype=sizes.dtype)
    corners = draws * limits
    return torch.cat([corners, corners + sizes], dim=-1)


def ground_truth_part_boxes(data_samples: Optional[List[DataSample]],
                            device: torch.device, dtype: torch.dtype) -> Tensor:
    """The (B, P, 4) ground-truth part regions carried by the data samples.

    Args:
        data_samples (list[DataSample], optional): each with ``gt_bboxes``,
            a (P, 4) xyxy array or tensor in input pixels, the same P for all
            (``SyntheticFGVC(with_part_boxes=True)`` and ``PackInputs(
            algorithm_keys=('gt_bboxes', ))``).
        device (torch.device): where the boxes go.
        dtype (torch.dtype): their dtype.

    Returns:
        Tensor: (B, P, 4).
    """
    if not data_samples or any('gt_bboxes' not in sample for sample in data_samples):
        raise ValueError(
            "'ground_truth' boxes (part_pool.boxes, teacher_mask_boxes) need gt_bboxes "
            'on every data sample: '
            'load them with SyntheticFGVC(with_part_boxes=True) and carry them with '
            "PackInputs(algorithm_keys=('gt_bboxes', )) in the train and test pipelines")
    boxes = [torch.as_tensor(sample.gt_bboxes, dtype=dtype, device=device)
             for sample in data_samples]
    shapes = {tuple(box.shape) for box in boxes}
    if len(shapes) != 1 or len(boxes[0].shape) != 2 or boxes[0].shape[1] != 4:
        raise ValueError(f'gt_bboxes must be (P, 4) with the same P in every sample, '
                         f'got shapes {sorted(shapes)}')
    return torch.stack(boxes)


def ranked_boxes(student: StudentOutput) -> Tuple[Tensor, int]:
    """The (B, N + K) detached boxes a ranking step scores, the N proposals
    first, and K, the number of sampled anchors (0 on a step without)."""
    if student.sample_boxes is None:
        return student.boxes.detach(), 0
    boxes = torch.cat([student.boxes.detach(), student.sample_boxes.detach()], dim=1)
    return boxes, student.sample_boxes.shape[1]


def split_ranked(values: Tensor, num_samples: int) -> Tuple[Tensor, Optional[Tensor]]:
    """(B, N + K) values -> (B, N) of the proposals and (B, K) of the samples
    (None when K is 0)."""
    if num_samples == 0:
        return values, None
    return tuple(values.split([values.shape[1] - num_samples, num_samples], dim=1))


def mean_with_context(box_logits: Tensor, context_logits: Tensor) -> Tensor:
    """(B * K, C) logits of K boxes per image averaged with their image's
    (B, C) logits (``rank_context='image'``)."""
    num_boxes = box_logits.shape[0] // context_logits.shape[0]
    return (box_logits + context_logits.repeat_interleave(num_boxes, dim=0)) / 2


def global_average_pool(feat: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, C)."""
    return feat.mean(dim=(2, 3))


class Teacher(BaseModule):
    """The teacher net: a backbone on the 5-channel input, a neck that takes the
    saliency mask (``PAFBilinearNeck``), and a classification head.

    Args:
        backbone (dict): e.g. ``ExpandedInputResNet`` with ``in_channels=5`` and
            ``out_indices=(2, 3)`` (C4 for the hint, C5 for the neck).
        neck (dict): a neck called as ``neck(feats, saliency_mask=...,
            return_grouping_loss=...)``.
        head (dict): an mmpretrain ``ClsHead`` on the neck's output.
    """

    def __init__(self, backbone: dict, neck: dict, head: dict,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.backbone = _build(backbone)
        self.neck = _build(neck)
        self.head = _build(head)

    def forward(self, teacher_input: Tensor, saliency_mask: Optional[Tensor],
                with_grouping_loss: bool = True) -> TeacherOutput:
        """Teacher logits from the 5-channel input.

        Args:
            teacher_input (Tensor): (B, 5, H, W), from ``teacher_input``.
            saliency_mask (Tensor, optional): (B, 1, H, W) box mask for the
                neck's part attention.
            with_grouping_loss (bool): also compute the neck's grouping loss;
                prediction, which never reads it, passes False (it cost about
                as much as the neck's pooling). Defaults to True.

        Returns:
            TeacherOutput: stages, (B, K) logits, grouping loss (None without
            ``with_grouping_loss``).
        """
        feats = check_stage_features(self.backbone(teacher_input), self.backbone,
                                     min_stages=1, role='teacher backbone')
        if not with_grouping_loss:
            pooled = self.neck(feats, saliency_mask=saliency_mask)
            return TeacherOutput(feats, self.head(pooled), None)
        pooled, grouping_loss = self.neck(
            feats, saliency_mask=saliency_mask, return_grouping_loss=True)
        return TeacherOutput(feats, self.head(pooled), grouping_loss)


@MODELS.register_module()
class DAFClassifier(BaseClassifier):
    """DAF-net (Dual Attention Fusion) for fine-grained classification.

    Every part below is switched by config, so that the paper's ablations
    (Table 3) are configs:

    - student only (``location_heatmap``, ``sppn_*``, ``teacher``,
      ``fusion_head`` all None): a ResNet + GAP + linear head, the baseline;
    - ``+ SPPN``: ``sppn_neck`` and ``sppn_head`` set; all anchors are
      candidates;
    - ``+ LHM``: ``location_heatmap`` set; SPPN candidates are the anchors whose
      centre lies in the object mask, and R_area uses the object area S;
    - ``+ teacher``: ``teacher`` (and usually ``fusion_head``) set;
    - ``+ distillation``: ``distill`` set.

    Training step (shapes for a batch of B images of H x W, N parts, K classes):

    1. student backbone -> (C3, C4, C5); GAP(C5) -> student head -> z_s (B, K),
       loss ``loss_pred``;
    2. location heatmap from (C3, C4, C5): heatmap (B,1,H/8,W/8), object mask,
       object area S (B,);
    3. FPN(C3..C5) -> SPPN head -> N boxes (B,N,4) and undetached scores (B,N);
    4. part images (B*N,3,H,W) -> ONE batched pass through the student backbone
       and head -> part logits (B,N,K); losses ``loss_rank``, ``loss_overlap``,
       ``loss_area`` (SPPN head) and ``loss_con`` (concentrate). A step that
       uses neither the part logits nor their cross entropy (no
       ``loss_concentrate``, proposals ranked by their windows) skips this
       pass (:meth:`part_pass_needed`);
    5. teacher on concat(img, heatmap, box saliency mask) (B,5,H,W) -> z_t,
       losses ``loss_teacher`` and ``loss_group`` (the neck's grouping loss);
    6. distillation: ``loss_hint`` (regressor(student C4) vs teacher C4) and
       ``loss_soft`` (KL at temperature T); the teacher side is detached;
    7. fusion head on (z_s, z_t) -> fused logits, ``loss_csf``; z_s is the
       student's prediction, its image logits averaged with its pooled
       logits under ``part_pool.predict``, in training as in prediction.

    The total is ``a * L_student + b * L_teacher + c * L_csf`` with
    ``loss_weights=dict(student=a, teacher=b, fusion=c)``; every loss is
    returned already weighted, under its own name, so the log shows each term.

    Prediction returns the fused score as ``pred_score`` (falling back to the
    teacher's, then the student's, when a part is switched off), plus
    ``student_score``, ``teacher_score``, ``part_boxes`` (N,4), ``part_scores``
    (N,) and ``heatmap`` (1,H/8,W/8) on each data sample.

    Args:
        backbone (dict): student backbone; must return the three stages
            (C3, C4, C5), e.g. mmpretrain ``ResNet`` with ``out_indices=(1, 2, 3)``.
        head (dict): student classification head on GAP(C5), e.g.
            ``LinearClsHead``; its loss is L_pred.
        location_heatmap (dict, optional): ``LocationHeatmap`` config; None
            turns the LHM off.
        sppn_neck (dict, optional): mmdet ``FPN`` config (``_scope_='mmdet'``)
            on (C3, C4, C5).
        sppn_head (dict, optional): mmdet ``SPPNHead`` config
            (``_scope_='mmdet'``). Needs ``sppn_neck``.
        part_images (dict): the part image generator, by default
            ``dict(type='PartImageGenerator')`` (``blur_sigma_ratio`` 1/50 of
            the image side, ``noise_std`` 1.0, ``scale`` 1.0, ``soft_edge`` 0);
            keys given without ``type`` configure that default.
        part_bn (str): how the part pass uses the student's BatchNorm layers:
            ``'clean'`` normalises the part images with the batch statistics
            of the clean images of the same step and leaves the running
            statistics alone; ``'running'`` uses the running statistics;
            ``'shared'`` is plain train mode (the part images get their own
            batch statistics and enter the running statistics). Defaults to
            ``'clean'`` (docs/benchmarks.md, "Why the defaults").
        sppn_detach_input (bool): stop the SPPN losses' gradient at the SPPN's
            input, so that only the SPPN (FPN + head) learns from them and the
            student backbone does not. Defaults to False (the paper trains
            end to end).
        predict_part_top_m (int): M > 0 makes the student's prediction the mean
            of its full-image logits and its top-M part images' logits, as
            NTS-Net combines the image and its parts (costs N more student
            passes at test time). Defaults to 0: full image only.
        part_backbone_grad_scale (float): factor on the gradient the part
            images' losses (``loss_con``) send into the student backbone;
            the student head still learns from them at full strength. 0
            keeps the backbone for the clean images (and the distillation);
            1 is the paper's end-to-end training. The gradient that reaches
            the boxes through differentiable part images
            (``part_images.soft_edge``) is scaled too. Defaults to 1.0.
        single_box_crop (int): S > 0 runs the sampled anchors' single-box
            part images (``SPPNHead(rank_samples=K)``) through the student as
            S x S windows centred on their boxes, at the image's pixel scale
            (:func:`crop_around_boxes`), instead of whole images: their cost
            falls by about (H*W)/(S*S), and their cross entropy then says how
            well the box and its near context classify. 0 (default) ranks by
            whole single-box part images.
        proposal_rank_ce (str): which cross entropy ranks the N proposals
            together with the sampled anchors. ``'part_image'``: that of their
            part images from the part pass (whole images). ``'window'``: that
            of their S x S windows, like the samples' (N more windows per
            sampling step). A window keeps less context than a whole image,
            so its cross entropy runs lower or higher than the whole image's
            depending on the checkpoint; mixed, a proposal is ranked against
            a sample by the kind of input as much as by the box
            (docs/benchmarks_history.md, "One kind of cross entropy for the
            ranking"). Without ``single_box_crop`` the samples are
            whole images like the part images and ``'window'`` changes
            nothing; steps without samples rank the proposals by their part
            images either way. Defaults to ``'part_image'``.
        rank_target (str): what ranks the proposals and the sampled anchors
            in ``loss_rank``. ``'part_images'``: the student's cross entropy
            on their part images or windows (``single_box_crop``,
            ``proposal_rank_ce``). ``'clean_features'``: the student head on
            the clean pass's last stage averaged inside each box
            (:meth:`clean_feature_ce`), no backbone pass per box; needs
            ``single_box_crop=0`` and ``proposal_rank_ce='part_image'``.
            ``'occlusion'``: the student's cross entropy on the image with
            the box hidden (:meth:`occlusion_ce`), highest first: a box ranks
            high for what the image loses without it, so every part the
            student reads in context can rank, not only one it can read
            alone. One forward pass per box on the whole image; needs
            ``single_box_crop=0`` and ``proposal_rank_ce='part_image'``.
            ``'consistency'``: how closely each box's features (the clean
            pass's first stage, pooled in the box) match the best cell of
            every other image in the batch, highest first
            (:meth:`consistency_target`): a weakly supervised part signal
            that favours what recurs on every object over what tells the
            classes apart; no backbone pass per box; needs
            ``single_box_crop=0`` and ``proposal_rank_ce='part_image'``.
            Defaults to ``'part_images'``.
        rank_context (str): ``'none'`` ranks each box by its window's cross
            entropy alone. ``'image'`` ranks it by the cross entropy of the
            mean of its window's logits and the clean image's (detached):
            of the prediction the box would join (``part_pool.predict``).
            A box then ranks high for what it adds to the image, not for
            what it says alone, so the one most telling part no longer
            takes every proposal. Needs ``single_box_crop > 0`` and
            ``proposal_rank_ce='window'``. Defaults to ``'none'``.
        window_loss (dict, optional): ``dict(loss_weight=1.0)``. The S x S
            windows that rank the proposals and the sampled anchors also
            train the student: a cross entropy per window into the backbone
            and head (``loss_window``, scaled like the part losses, on the
            steps that draw samples, whatever ``part_backbone_grad_scale``),
            from the same forward pass (:meth:`trained_window_ce`). A student trained
            on the whole image alone reads from a window only the most
            telling part, so that part is all the ranking target can point
            to; trained on windows it may learn to read the others. Needs
            ``single_box_crop > 0``, ``proposal_rank_ce='window'`` and an
            SPPN with ``rank_samples > 0``. None (default) turns it off.
        part_pool (dict, optional): ``dict(top_m=3, loss_weight=1.0,
            predict=True, boxes='proposals')``. The student head also
            classifies the last stage averaged inside each of the top-M
            proposals (:meth:`part_pool_logits`; ``loss_part_pool``, a cross
            entropy per box into the backbone, none into the SPPN); with
            ``predict`` the student's prediction averages those M logits
            with the image's. ``boxes='random'`` moves the boxes to random
            positions (same sizes): the control for whether the proposals'
            positions matter. ``boxes='ground_truth'`` pools in every
            ground-truth part region instead (``top_m`` unused), in training
            and prediction: the oracle control, what perfect proposals could
            give; the data samples must carry ``gt_bboxes``
            (:func:`ground_truth_part_boxes`). ``boxes='object'`` pools once
            over the location heatmap's object mask instead (``top_m``
            unused; needs ``location_heatmap``): the control for whether
            the proposals add anything to the object region the heatmap
            already finds. ``boxes='proposals_and_object'`` pools at both,
            the top-M proposals and the object mask (M + 1 logits; needs
            the SPPN and ``location_heatmap``). ``warmup=True`` scales
            ``loss_part_pool`` by ``part_loss_scale`` like the part losses
            (``PartLossWarmupHook``): no pooled loss while the proposals are
            still untrained. ``samples=True`` (needs an SPPN with
            ``rank_samples > 0``) also trains the pooled cross entropy at
            the SPPN's K sampled anchors on the steps that draw them
            (``loss_part_pool_samples``, same weight; training only): anchors
            drawn uniformly over the object mask (the image without the
            heatmap), so that the student learns to classify every region
            of the object, not only where its pooled boxes lie. None
            (default) turns it off.
        loss_concentrate (dict, optional): ``ConcentrateLoss`` config. None
            drops L_con; with the proposals ranked by their windows
            (``proposal_rank_ce='window'``) nothing then reads the part
            images, and the training step skips their pass.
        teacher (dict, optional): ``dict(backbone=..., neck=..., head=...)``,
            see :class:`Teacher`.
        distill (dict, optional): ``dict(student_channels, teacher_channels,
            student_index=1, teacher_index=0, loss_hint=..., loss_soft=...,
            gate='all')``. ``student_index``/``teacher_index`` pick the hint
            stage (C4) from the two backbones' outputs. The regressor is a 1x1
            conv + BN. ``gate`` picks the samples both distillation losses act
            on (:func:`distill_gate`): ``'all'`` (the paper),
            ``'teacher_correct'``, ``'teacher_better'`` or
            ``'teacher_ahead'`` (the whole batch, only while the teacher's
            running mean probability of the ground truth is above the
            student's, :meth:`teacher_ahead_gate`; the running means use
            ``gate_momentum``, default 0.9 per iteration); the share kept is
            logged as ``distill_kept``.
        teacher_attention (bool): False gives the teacher the image only: its
            heatmap and saliency channels are zeros and its neck gets no
            saliency mask (no part attention filter; the teacher's neck must
            then be built with ``use_attention=False``). The control for
            whether the dual attention matters. Defaults to True.
        teacher_mask_boxes (str): the boxes whose union is the teacher's
            saliency mask (input channel and part attention filter):
            ``'proposals'`` (the paper) or ``'ground_truth'``, every true
            part region the data samples carry (``gt_bboxes``, as
            ``part_pool.boxes='ground_truth'``): the oracle control for
            whether the teacher gains from better boxes. Defaults to
            ``'proposals'``.
        fusion_head (dict, optional): ``ClassScoreFusionHead`` config.
        fusion_detach_inputs (bool): whether the fusion loss stops at the
            student and teacher logits (train only the fusion layer) or also
            trains both nets. Our default: False (the paper trains jointly).
        loss_weights (dict): a, b, c of the total loss, keys ``student``,
            ``teacher``, ``fusion``. Defaults to all 1.
        data_preprocessor (dict, optional): defaults to ``ClsDataPreprocessor``.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 location_heatmap: Optional[dict] = None,
                 sppn_neck: Optional[dict] = None,
                 sppn_head: Optional[dict] = None,
                 part_images: Optional[dict] = None,
                 part_bn: str = 'clean',
                 sppn_detach_input: bool = False,
                 predict_part_top_m: int = 0,
                 part_backbone_grad_scale: float = 1.0,
                 single_box_crop: int = 0,
                 proposal_rank_ce: str = 'part_image',
                 rank_target: str = 'part_images',
                 rank_context: str = 'none',
                 window_loss: Optional[dict] = None,
                 part_pool: Optional[dict] = None,
                 loss_concentrate: Optional[dict] = None,
                 teacher: Optional[dict] = None,
                 distill: Optional[dict] = None,
                 teacher_attention: bool = True,
                 teacher_mask_boxes: str = 'proposals',
                 fusion_head: Optional[dict] = None,
                 fusion_detach_inputs: bool = False,
                 loss_weights: Optional[Dict[str, float]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        data_preprocessor = data_preprocessor or {}
        if isinstance(data_preprocessor, dict):
            data_preprocessor.setdefault('type', 'ClsDataPreprocessor')
        super().__init__(init_cfg=init_cfg, data_preprocessor=data_preprocessor)
        if (sppn_neck is None) != (sppn_head is None):
            raise ValueError('DAFClassifier: sppn_neck and sppn_head must be set '
                             f'together, got sppn_neck={sppn_neck!r}, '
                             f'sppn_head={sppn_head!r}')
        if distill is not None and teacher is None:
            raise ValueError('DAFClassifier: distill needs a teacher (teacher=None)')
        if fusion_head is not None and teacher is None:
            raise ValueError('DAFClassifier: fusion_head needs a teacher '
                             '(teacher=None)')

        self.backbone = _build(backbone)
        self.head = _build(head)
        self.location_heatmap = _build(location_heatmap)
        self.sppn_neck = _build(sppn_neck)
        self.sppn_head = _build(sppn_head)
        self.loss_concentrate = _build(loss_concentrate)
        self.part_image_generator = _build_part_image_generator(part_images)
        if part_bn not in PART_BN_MODES:
            raise ValueError(f'DAFClassifier: part_bn must be one of {PART_BN_MODES}, '
                             f'got {part_bn!r}')
        self.part_bn = part_bn
        self.sppn_detach_input = sppn_detach_input
        if predict_part_top_m < 0:
            raise ValueError('DAFClassifier: predict_part_top_m must be >= 0, got '
                             f'{predict_part_top_m}')
        if predict_part_top_m > 0 and sppn_head is None:
            raise ValueError('DAFClassifier: predict_part_top_m needs the SPPN '
                             '(sppn_head=None)')
        self.predict_part_top_m = predict_part_top_m
        if not 0 <= part_backbone_grad_scale <= 1:
            raise ValueError('DAFClassifier: part_backbone_grad_scale must be in '
                             f'[0, 1], got {part_backbone_grad_scale}')
        self.part_backbone_grad_scale = part_backbone_grad_scale
        if single_box_crop < 0:
            raise ValueError('DAFClassifier: single_box_crop must be >= 0, got '
                             f'{single_box_crop}')
        part_scale = getattr(self.part_image_generator, 'scale', 1.0)
        zoom_context = getattr(self.part_image_generator, 'zoom_context', 0.0)
        if single_box_crop > 0 and (part_scale != 1.0 or zoom_context > 0):
            # The windows are cut at the boxes' input-pixel positions.
            raise ValueError('DAFClassifier: single_box_crop needs part images at '
                             'the input geometry (part_images.scale=1, '
                             f'zoom_context=0), got scale={part_scale}, '
                             f'zoom_context={zoom_context}')
        self.single_box_crop = single_box_crop
        if proposal_rank_ce not in PROPOSAL_RANK_CE:
            raise ValueError(f'DAFClassifier: proposal_rank_ce must be one of '
                             f'{PROPOSAL_RANK_CE}, got {proposal_rank_ce!r}')
        self.proposal_rank_ce = proposal_rank_ce
        if rank_target not in RANK_TARGETS:
            raise ValueError(f'DAFClassifier: rank_target must be one of '
                             f'{RANK_TARGETS}, got {rank_target!r}')
        if rank_target != 'part_images' and (single_box_crop > 0
                                             or proposal_rank_ce != 'part_image'):
            raise ValueError(
                f'DAFClassifier: rank_target={rank_target!r} ranks the boxes '
                'without single-box part images or windows; set '
                "single_box_crop=0 and proposal_rank_ce='part_image', got "
                f'single_box_crop={single_box_crop}, '
                f'proposal_rank_ce={proposal_rank_ce!r}')
        self.rank_target = rank_target
        if rank_context not in RANK_CONTEXTS:
            raise ValueError(f'DAFClassifier: rank_context must be one of '
                             f'{RANK_CONTEXTS}, got {rank_context!r}')
        if rank_context == 'image' and (single_box_crop == 0
                                        or proposal_rank_ce != 'window'
                                        or rank_target != 'part_images'):
            raise ValueError(
                "DAFClassifier: rank_context='image' ranks the proposals and "
                'the samples by their windows; set single_box_crop > 0, '
                "proposal_rank_ce='window' and rank_target='part_images', got "
                f'single_box_crop={single_box_crop}, '
                f'proposal_rank_ce={proposal_rank_ce!r}, rank_target={rank_target!r}')
        self.rank_context = rank_context
        self.window_loss = None
        if window_loss is not None:
            unknown = set(window_loss) - {'loss_weight'}
            if unknown:
                raise ValueError(f'DAFClassifier: unknown window_loss keys {sorted(unknown)}')
            if (single_box_crop == 0 or proposal_rank_ce != 'window'
                    or rank_target != 'part_images'
                    or getattr(self.sppn_head, 'rank_samples', 0) == 0):
                raise ValueError(
                    'DAFClassifier: window_loss trains the student on the windows '
                    'that rank the proposals and the sampled anchors; set '
                    "single_box_crop > 0, proposal_rank_ce='window', "
                    "rank_target='part_images' and sppn_head.rank_samples > 0, got "
                    f'single_box_crop={single_box_crop}, '
                    f'proposal_rank_ce={proposal_rank_ce!r}, rank_target={rank_target!r}, '
                    f"rank_samples={getattr(self.sppn_head, 'rank_samples', None)}")
            self.window_loss = dict(loss_weight=float(window_loss.get('loss_weight', 1.0)))
        self.part_pool = None
        if part_pool is not None:
            part_pool = dict(part_pool)
            unknown = set(part_pool) - {'top_m', 'loss_weight', 'predict', 'boxes',
                                        'warmup', 'samples'}
            if unknown:
                raise ValueError(f'DAFClassifier: unknown part_pool keys {sorted(unknown)}')
            if sppn_head is None and part_pool.get('boxes') != 'object':
                raise ValueError('DAFClassifier: part_pool needs the SPPN (sppn_head=None)')
            self.part_pool = dict(top_m=int(part_pool.get('top_m', 3)),
                                  loss_weight=float(part_pool.get('loss_weight', 1.0)),
                                  predict=bool(part_pool.get('predict', True)),
                                  boxes=part_pool.get('boxes', 'proposals'),
                                  warmup=bool(part_pool.get('warmup', False)),
                                  samples=bool(part_pool.get('samples', False)))
            if self.part_pool['samples'] and getattr(self.sppn_head, 'rank_samples', 0) == 0:
                raise ValueError(
                    "DAFClassifier: part_pool.samples trains the pooled cross entropy at "
                    "the SPPN's sampled anchors; set sppn_head.rank_samples > 0, got "
                    f"rank_samples={getattr(self.sppn_head, 'rank_samples', None)}")
            if self.part_pool['boxes'] not in PART_POOL_BOXES:
                raise ValueError(f'DAFClassifier: part_pool.boxes must be one of '
                                 f'{PART_POOL_BOXES}, got {self.part_pool["boxes"]!r}')
            if self.part_pool['boxes'] in OBJECT_POOL_BOXES and location_heatmap is None:
                raise ValueError(f"DAFClassifier: part_pool.boxes="
                                 f"{self.part_pool['boxes']!r} pools over the location "
                                 "heatmap's object mask; location_heatmap is None")
            if self.part_pool['top_m'] < 1:
                raise ValueError('DAFClassifier: part_pool.top_m must be >= 1, got '
                                 f'{self.part_pool["top_m"]}')
        if (part_backbone_grad_scale == 0
                and getattr(self.part_image_generator, 'soft_edge', 0) > 0):
            raise ValueError('DAFClassifier: part_images.soft_edge > 0 makes the part '
                             'images differentiable in the boxes, but '
                             'part_backbone_grad_scale=0 stops the part loss before '
                             'the backbone, so the boxes would get no gradient; set '
                             'part_backbone_grad_scale > 0 or soft_edge=0')
        # Set by PartLossWarmupHook; multiplies the part losses (loss_rank,
        # loss_overlap, loss_area, loss_con).
        self.part_loss_scale = 1.0

        self.teacher = Teacher(**teacher) if isinstance(teacher, dict) else teacher
        self.distill_cfg = None
        if distill is not None:
            distill = dict(distill)
            self.hint_regressor = make_hint_regressor(
                distill.pop('student_channels'), distill.pop('teacher_channels'))
            self.loss_hint = _build(distill.pop('loss_hint', dict(type='HintLoss')))
            self.loss_soft = _build(
                distill.pop('loss_soft', dict(type='SoftTargetLoss', temperature=4.0)))
            self.distill_cfg = dict(student_index=distill.pop('student_index', 1),
                                    teacher_index=distill.pop('teacher_index', 0),
                                    gate=distill.pop('gate', 'all'),
                                    gate_momentum=distill.pop('gate_momentum', 0.9))
            if self.distill_cfg['gate'] not in DISTILL_GATES:
                raise ValueError(f'DAFClassifier: distill.gate must be one of '
                                 f'{DISTILL_GATES}, got {self.distill_cfg["gate"]!r}')
            if not 0.0 <= self.distill_cfg['gate_momentum'] < 1.0:
                raise ValueError('DAFClassifier: distill.gate_momentum must be in '
                                 f'[0, 1), got {self.distill_cfg["gate_momentum"]}')
            if self.distill_cfg['gate'] == 'teacher_ahead':
                # Running means of the ground truth's probability, teacher
                # then student. Buffers, so that a resumed run gates alike.
                self.register_buffer('distill_true_prob', torch.zeros(2))
            if distill:
                raise ValueError(f'DAFClassifier: unknown distill keys {sorted(distill)}')
        if (not teacher_attention and self.teacher is not None
                and getattr(self.teacher.neck, 'use_attention', False)):
            raise ValueError('DAFClassifier: teacher_attention=False gives the teacher '
                             'neck no saliency mask; set teacher.neck.use_attention='
                             'False as well (an unused attention filter gets no '
                             'gradient, which DDP refuses)')
        self.teacher_attention = teacher_attention
        if teacher_mask_boxes not in TEACHER_MASK_BOXES:
            raise ValueError(f'DAFClassifier: teacher_mask_boxes must be one of '
                             f'{TEACHER_MASK_BOXES}, got {teacher_mask_boxes!r}')
        if teacher_mask_boxes == 'ground_truth' and not (self.teacher is not None
                                                         and teacher_attention):
            raise ValueError("DAFClassifier: teacher_mask_boxes='ground_truth' needs a "
                             'teacher with teacher_attention=True')
        self.teacher_mask_boxes = teacher_mask_boxes
        self.fusion_head = _build(fusion_head)
        self.fusion_detach_inputs = fusion_detach_inputs

        self.loss_weights = dict.fromkeys(LOSS_GROUPS, 1.0)
        unknown = set(loss_weights or {}) - set(LOSS_GROUPS)
        if unknown:
            raise ValueError(f'DAFClassifier: unknown loss_weights keys {sorted(unknown)}; '
                             f'expected some of {LOSS_GROUPS}')
        self.loss_weights.update(loss_weights or {})

    # ------------------------------------------------------------------ switches
    @property
    def with_sppn(self) -> bool:
        return self.sppn_head is not None

    @property
    def with_teacher(self) -> bool:
        return self.teacher is not None

    @property
    def with_distill(self) -> bool:
        return self.distill_cfg is not None

    @property
    def with_fusion(self) -> bool:
        return self.fusion_head is not None

    # ------------------------------------------------------------------ passes
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
        """The SPPN on the student stages: FPN, then top-N proposals and, in
        training with ``rank_samples``, the sampled anchors of the same dense
        pass.

        Args:
            feats (Sequence[Tensor]): student stages (C3, C4, C5); detached
                first under ``sppn_detach_input``.
            img_shape (Tuple[int, int]): (H, W) of the input.
            object_mask (Tensor, optional): (B, 1, h, w) bool object mask.

        Returns:
            tuple: ``boxes`` (B, N, 4), ``box_scores`` (B, N), ``sample_boxes``
            (B, K, 4) and ``sample_scores`` (B, K), the last two None unless
            sampling.
        """
        if self.sppn_detach_input:
            feats = tuple(feat.detach() for feat in feats)
        sppn_feats = self.sppn_neck(feats)
        if self.training and self.sppn_head.samples_this_step():
            return self.sppn_head.propose_and_sample(sppn_feats, img_shape, object_mask)
        boxes, box_scores = self.sppn_head.propose(sppn_feats, img_shape, object_mask)
        return boxes, box_scores, None, None

    def part_logits(self, inputs: Tensor, boxes: Tensor,
                    clean_bn_stats: Optional[dict] = None) -> Tensor:
        """Logits of the B*N part images from ONE batched student pass.

        Args:
            inputs (Tensor): (B, 3, H, W) clean images.
            boxes (Tensor): (B, N, 4) part boxes; gradient reaches them only
                when the part image generator is differentiable in the boxes.
            clean_bn_stats (dict, optional): the clean pass's BatchNorm batch
                statistics (``part_bn='clean'``).

        Returns:
            Tensor: (B, N, K).
        """
        batch_size, num_parts = boxes.shape[:2]
        generator = None
        if not self.training:
            # The same noise for every evaluation, so predictions that use the
            # part images (predict_part_top_m) are deterministic.
            generator = torch.Generator(device=inputs.device).manual_seed(0)
        part_imgs = self.part_image_generator(inputs, boxes, generator=generator)
        # Without gradient into the backbone, its part pass keeps no graph.
        grad_context = torch.no_grad() if self.part_backbone_grad_scale == 0 \
            else nullcontext()
        with self._part_bn_context(clean_bn_stats), grad_context:
            feats = self.backbone(part_imgs)
        feats = [scale_gradient(feat, self.part_backbone_grad_scale) for feat in feats]
        logits = self.student_logits(feats)
        return logits.view(batch_size, num_parts, -1)

    @torch.no_grad()
    def single_box_ce(self, inputs: Tensor, boxes: Tensor, labels: Tensor,
                      clean_bn_stats: Optional[dict] = None,
                      crop: Optional[int] = None,
                      context_logits: Optional[Tensor] = None) -> Tensor:
        """Ground-truth cross entropy of one part image per box, no gradient.

        Each part image keeps only its own box sharp (no other boxes), so its
        cross entropy depends on that box alone: the ranking target of the
        sampled anchors (``SPPNHead(rank_samples=K)``). With
        ``single_box_crop`` S, each part image is first cut to the S x S window
        centred on its box.

        Args:
            inputs (Tensor): (B, 3, H, W) clean images.
            boxes (Tensor): (B, K, 4) boxes, xyxy input pixels.
            labels (Tensor): (B, ) ground-truth labels.
            clean_bn_stats (dict, optional): as in :meth:`part_logits`.
            crop (int, optional): the window side S, 0 for whole images;
                defaults to ``single_box_crop``.
            context_logits (Tensor, optional): (B, num_classes) logits that
                each box's logits are averaged with before the cross entropy
                (``rank_context='image'``).

        Returns:
            Tensor: (B, K) float32 cross entropies.
        """
        batch_size, num_boxes = boxes.shape[:2]
        crop = self.single_box_crop if crop is None else crop
        if crop > 0:
            part_imgs = self.part_image_generator.single_box_windows(inputs, boxes, crop)
        else:
            part_imgs = self.part_image_generator.single_box_images(inputs, boxes)
        with self._part_bn_context(clean_bn_stats):
            logits = self.student_logits(self.backbone(part_imgs))
        if context_logits is not None:
            logits = mean_with_context(logits, context_logits)
        return F.cross_entropy(logits.float(), labels.repeat_interleave(num_boxes),
                               reduction='none').view(batch_size, num_boxes)

    def ranked_sample_ce(self, inputs: Tensor, boxes: Tensor, sample_boxes: Tensor,
                         labels: Tensor, part_ce: Optional[Tensor],
                         clean_bn_stats: Optional[dict] = None,
                         image_logits: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """The cross entropies that rank the proposals with the samples.

        Args:
            inputs (Tensor): (B, 3, H, W) clean images.
            boxes (Tensor): (B, N, 4) proposals.
            sample_boxes (Tensor): (B, K, 4) sampled anchors.
            labels (Tensor): (B, ) ground-truth labels.
            part_ce (Tensor, optional): (B, N) the proposals' part images'
                cross entropy; not read (may be None) when the proposals are
                ranked by their windows.
            clean_bn_stats (dict, optional): as in :meth:`part_logits`.
            image_logits (Tensor, optional): (B, num_classes) the clean
                image's logits; with ``rank_context='image'`` each window's
                logits are averaged with them.

        Returns:
            tuple: (B, N) for the proposals (``part_ce`` itself unless
            ``proposal_rank_ce='window'``) and (B, K) for the samples, both
            from :meth:`single_box_ce`.
        """
        if not self.ranks_proposals_by_windows(sampling=True):
            return part_ce, self.single_box_ce(inputs, sample_boxes, labels,
                                               clean_bn_stats)
        all_boxes = torch.cat([boxes.detach(), sample_boxes], dim=1)
        if self.rank_context == 'image':
            all_ce = self.single_box_ce(inputs, all_boxes, labels, clean_bn_stats,
                                        context_logits=image_logits.detach())
        else:
            all_ce = self.single_box_ce(inputs, all_boxes, labels, clean_bn_stats)
        return all_ce.split([boxes.shape[1], sample_boxes.shape[1]], dim=1)

    def trained_window_ce(self, inputs: Tensor, boxes: Tensor, sample_boxes: Tensor,
                          labels: Tensor, clean_bn_stats: Optional[dict],
                          image_logits: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The ranking cross entropies of the proposals and the samples, from
        windows that also train the student (``window_loss``).

        Args:
            inputs (Tensor): (B, 3, H, W) clean images.
            boxes (Tensor): (B, N, 4) proposals.
            sample_boxes (Tensor): (B, K, 4) sampled anchors.
            labels (Tensor): (B, ) ground-truth labels.
            clean_bn_stats (dict, optional): as in :meth:`part_logits`.
            image_logits (Tensor): (B, num_classes) the clean image's logits,
                averaged into the ranking under ``rank_context='image'``.

        Returns:
            tuple: (B, N) and (B, K) detached ranking cross entropies, as
            :meth:`ranked_sample_ce` gives them, and the mean cross entropy
            of the N + K windows, with gradient.
        """
        all_boxes = torch.cat([boxes.detach(), sample_boxes], dim=1)
        batch_size, num_boxes = all_boxes.shape[:2]
        windows = self.part_image_generator.single_box_windows(inputs, all_boxes,
                                                               self.single_box_crop)
        with self._part_bn_context(clean_bn_stats):
            logits = self.student_logits(self.backbone(windows))
        box_labels = labels.repeat_interleave(num_boxes)
        window_ce = F.cross_entropy(logits.float(), box_labels, reduction='none')
        rank_ce = window_ce.detach()
        if self.rank_context == 'image':
            rank_ce = F.cross_entropy(
                mean_with_context(logits.detach(), image_logits.detach()).float(),
                box_labels, reduction='none')
        proposal_ce, sample_ce = rank_ce.view(batch_size, num_boxes).split(
            [boxes.shape[1], sample_boxes.shape[1]], dim=1)
        return proposal_ce, sample_ce, window_ce.mean()

    def part_pool_logits(self, student: StudentOutput, img_shape: Tuple[int, int],
                         data_samples: Optional[List[DataSample]] = None) -> Tensor:
        """Student head logits on the last stage pooled in the top-M proposals.

        Args:
            student (StudentOutput): the clean pass with its proposals.
            img_shape (tuple): (H, W) of the input.
            data_samples (list[DataSample], optional): read only with
                ``part_pool.boxes='ground_truth'``, for their ``gt_bboxes``.

        Returns:
            Tensor: (B, M, K) logits (M = P with ``'ground_truth'``, 1 with
            ``'object'``, top-M + 1 with ``'proposals_and_object'``, the
            object last); the gradient reaches the backbone through the
            pooled cells, not the boxes or the mask.
        """
        if self.part_pool['boxes'] == 'object':
            return self.object_logits(student)
        if self.part_pool['boxes'] == 'proposals_and_object':
            return torch.cat([self.proposal_logits(student, img_shape),
                              self.object_logits(student)], dim=1)
        if self.part_pool['boxes'] == 'ground_truth':
            feat = student.feats[-1]
            boxes = ground_truth_part_boxes(data_samples, feat.device, feat.dtype)
            return self.box_logits(feat, boxes, img_shape)
        return self.proposal_logits(student, img_shape,
                                    at_random=self.part_pool['boxes'] == 'random')

    def object_logits(self, student: StudentOutput) -> Tensor:
        """(B, 1, K) student head logits on the last stage pooled over the
        location heatmap's object mask (the mask detached)."""
        pooled = mask_pooled_features(student.feats[-1], student.object_mask.detach())
        return self.head((pooled, ))[:, None]

    def proposal_logits(self, student: StudentOutput, img_shape: Tuple[int, int],
                        at_random: bool = False) -> Tensor:
        """(B, M, K) student head logits on the last stage pooled in the
        top-M proposals (detached); ``at_random`` moves them to random
        positions first, the same draw in every eval-mode call."""
        top_m = min(self.part_pool['top_m'], student.boxes.shape[1])
        boxes = student.boxes[:, :top_m].detach()
        if at_random:
            generator = None
            if not self.training:
                generator = torch.Generator(device=boxes.device).manual_seed(0)
            boxes = move_boxes_at_random(boxes, img_shape, generator)
        return self.box_logits(student.feats[-1], boxes, img_shape)

    def box_logits(self, feat: Tensor, boxes: Tensor,
                   img_shape: Tuple[int, int]) -> Tensor:
        """The student head on ``feat`` averaged inside each box.

        Args:
            feat (Tensor): (B, C, h, w) the student's last stage.
            boxes (Tensor): (B, M, 4) xyxy boxes, input pixels.
            img_shape (tuple): (H, W) of the input.

        Returns:
            Tensor: (B, M, K) logits.
        """
        pooled = box_pooled_features(feat, boxes, img_shape)
        return self.head((pooled.flatten(0, 1), )).view(*boxes.shape[:2], -1)

    @torch.no_grad()
    def clean_feature_ce(self, student: StudentOutput, labels: Tensor,
                         img_shape: Tuple[int, int]) -> Tuple[Tensor, Optional[Tensor]]:
        """Ranking targets from the clean pass (``rank_target='clean_features'``).

        Each box's cross entropy is that of the student head on the clean
        pass's last stage averaged inside the box (cells weighted by their
        overlap, :func:`box_pooled_features`): how well the features where
        the box lies classify the image. No backbone pass per box.

        Args:
            student (StudentOutput): the clean pass, with ``boxes`` and, on a
                sampling step, ``sample_boxes``.
            labels (Tensor): (B, ) ground-truth labels.
            img_shape (tuple): (H, W) of the input.

        Returns:
            tuple: (B, N) for the proposals and (B, K) for the samples (None
            on a step without samples), float32, no gradient.
        """
        boxes, num_samples = ranked_boxes(student)
        batch_size, num_boxes = boxes.shape[:2]
        logits = self.box_logits(student.feats[-1], boxes, img_shape)
        ce = F.cross_entropy(logits.flatten(0, 1).float(),
                             labels.repeat_interleave(num_boxes),
                             reduction='none').view(batch_size, num_boxes)
        return split_ranked(ce, num_samples)

    @torch.no_grad()
    def occlusion_ce(self, inputs: Tensor, student: StudentOutput, labels: Tensor,
                     clean_bn_stats: Optional[dict] = None
                     ) -> Tuple[Tensor, Optional[Tensor]]:
        """Ranking targets by occlusion (``rank_target='occlusion'``).

        Each box is hidden in a copy of the image (its pixels set to the mean
        colour, :func:`occluded_images`) and the copy goes through the
        student. The target is the negative of that copy's cross entropy, so
        that the box whose loss hurts the student most ranks first (the
        ranking loss puts lower targets first).

        Args:
            inputs (Tensor): (B, 3, H, W) clean images.
            student (StudentOutput): the clean pass, with ``boxes`` and, on a
                sampling step, ``sample_boxes``.
            labels (Tensor): (B, ) ground-truth labels.
            clean_bn_stats (dict, optional): as in :meth:`part_logits`.

        Returns:
            tuple: (B, N) targets of the proposals and (B, K) of the samples
            (None on a step without samples), float32, no gradient.
        """
        boxes, num_samples = ranked_boxes(student)
        batch_size, num_boxes = boxes.shape[:2]
        with self._part_bn_context(clean_bn_stats):
            logits = self.student_logits(self.backbone(occluded_images(inputs, boxes)))
        ce = F.cross_entropy(logits.float(), labels.repeat_interleave(num_boxes),
                             reduction='none').view(batch_size, num_boxes)
        return split_ranked(-ce, num_samples)

    @torch.no_grad()
    def consistency_target(self, student: StudentOutput,
                           img_shape: Tuple[int, int]) -> Tuple[Tensor, Optional[Tensor]]:
        """Ranking targets by cross-image consistency (``rank_target='consistency'``).

        Each box's target is the negative of
        :func:`cross_image_box_similarity` on the clean pass's first stage
        (C3, the stride of the part-sized anchors), its cells limited to the
        object mask when the location heatmap gives one: the box whose
        content recurs most across the batch's objects ranks first.

        Args:
            student (StudentOutput): the clean pass, with ``boxes`` and, on a
                sampling step, ``sample_boxes``.
            img_shape (tuple): (H, W) of the input.

        Returns:
            tuple: (B, N) targets of the proposals and (B, K) of the samples
            (None on a step without samples), float32, no gradient.
        """
        boxes, num_samples = ranked_boxes(student)
        similarity = cross_image_box_similarity(student.feats[0], boxes, img_shape,
                                                student.object_mask)
        return split_ranked(-similarity, num_samples)

    def ranks_proposals_by_windows(self, sampling: bool) -> bool:
        """Whether a step ranks the N proposals by their S x S windows.

        Args:
            sampling (bool): whether the step draws sampled anchors (the
                windows are cut only then).
        """
        return (sampling and self.proposal_rank_ce == 'window'
                and self.single_box_crop > 0)

    def part_pass_needed(self, sampling: bool = True) -> bool:
        """Whether a training step runs the N part images through the student.

        Their logits feed ``loss_con`` and their cross entropy ranks the
        proposals, unless the proposals are ranked by their windows: without
        ``loss_concentrate`` such a step reads nothing from them. Nor does a
        step that ranks nothing (:meth:`ranks_this_step`).

        Args:
            sampling (bool): whether the step draws sampled anchors.
                Defaults to True (every step, as with ``rank_interval=1``).
        """
        if not self.with_sppn:
            return False
        if self.loss_concentrate is not None:
            return True
        return (self.ranks_this_step(sampling) and self.rank_target == 'part_images'
                and not self.ranks_proposals_by_windows(sampling))

    def ranks_this_step(self, sampling: bool) -> bool:
        """Whether a training step applies the SPPN's ranking loss
        (:meth:`SPPNHead.ranks`); a step that does not needs no ranking
        target for its boxes.

        Args:
            sampling (bool): whether the step draws sampled anchors.
        """
        return self.sppn_head.ranks(with_samples=sampling)

    def _part_bn_context(self, clean_bn_stats: Optional[dict]):
        """How the part pass uses BatchNorm (see ``part_bn``)."""
        if self.part_bn == 'shared' or not self.training:
            return nullcontext()
        stats = clean_bn_stats if self.part_bn == 'clean' else None
        stack = ExitStack()
        stack.enter_context(without_activation_checkpointing(self.backbone))
        stack.enter_context(normalise_with_fixed_stats(self.backbone, stats))
        return stack

    def _clean_bn_recorder(self):
        if self.training and self.with_sppn and self.part_bn == 'clean':
            return record_batch_norm_stats(self.backbone)
        return nullcontext({})

    def teacher_input(self, inputs: Tensor, student: StudentOutput,
                      data_samples: Optional[List[DataSample]] = None
                      ) -> Tuple[Tensor, Optional[Tensor]]:
        """The teacher's 5-channel input and the saliency mask.

        Channel 4 is the location heatmap upsampled to the input (all ones
        without LHM); channel 5 the union of the N part boxes (all ones without
        SPPN), or of the true part regions of ``data_samples`` with
        ``teacher_mask_boxes='ground_truth'``. Without ``teacher_attention``
        both are zeros and the mask is None.

        Returns:
            tuple: (B, 5, H, W) teacher input, (B, 1, H, W) saliency mask or
            None.
        """
        batch_size, _, height, width = inputs.shape
        if not self.teacher_attention:
            no_attention = inputs.new_zeros((batch_size, 2, height, width))
            return torch.cat([inputs, no_attention], dim=1), None
        if student.heatmap is not None:
            heatmap = F.interpolate(student.heatmap.detach().to(inputs.dtype),
                                    size=(height, width), mode='bilinear',
                                    align_corners=False)
        else:
            heatmap = inputs.new_ones((batch_size, 1, height, width))
        boxes = student.boxes
        if self.teacher_mask_boxes == 'ground_truth':
            boxes = ground_truth_part_boxes(data_samples, inputs.device, inputs.dtype)
        if boxes is not None:
            saliency = boxes_to_saliency_mask(boxes.detach(),
                                              (height, width)).to(inputs.dtype)
        else:
            saliency = inputs.new_ones((batch_size, 1, height, width))
        return torch.cat([inputs, heatmap, saliency], dim=1), saliency

    def fused_logits(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        streams = (student_logits, teacher_logits)
        if self.fusion_detach_inputs:
            streams = tuple(s.detach() for s in streams)
        return self.fusion_head(streams)

    # ------------------------------------------------------------------ modes
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
        with self._clean_bn_recorder() as clean_bn_stats:
            student = self.run_student(inputs)
        weight_s = self.loss_weights['student']
        weight_t = self.loss_weights['teacher']
        weight_f = self.loss_weights['fusion']

        losses = {}
        # What the student predicts, and so what the fusion head fuses: the
        # image's logits, averaged with the pooled ones under part_pool.predict
        # (as in predict_logits), so that the fusion is trained on the inputs
        # it gets at test time.
        student_prediction = student.logits
        pred = self.head._get_loss(student.logits, data_samples)
        losses['loss_pred'] = weight_s * pred.pop('loss')
        losses.update({f'student_{k}': v for k, v in pred.items()})

        if self.part_pool is not None:
            pooled_logits = self.part_pool_logits(student, inputs.shape[-2:], data_samples)
            num_pooled = pooled_logits.shape[1]
            pool_weight = self.part_pool['loss_weight']
            if self.part_pool['warmup']:
                pool_weight *= self.part_loss_scale
            losses['loss_part_pool'] = weight_s * pool_weight * \
                F.cross_entropy(pooled_logits.flatten(0, 1).float(),
                                labels.repeat_interleave(num_pooled))
            if self.part_pool['samples'] and student.sample_boxes is not None:
                sample_logits = self.box_logits(student.feats[-1],
                                                student.sample_boxes.detach(),
                                                inputs.shape[-2:])
                losses['loss_part_pool_samples'] = weight_s * pool_weight * \
                    F.cross_entropy(sample_logits.flatten(0, 1).float(),
                                    labels.repeat_interleave(sample_logits.shape[1]))
            if self.part_pool['predict']:
                student_prediction = torch.cat([student.logits[:, None], pooled_logits],
                                               dim=1).mean(dim=1)

        if self.with_sppn:
            sampling = student.sample_boxes is not None
            part_logits = part_ce = None
            if self.part_pass_needed(sampling):
                part_logits = self.part_logits(inputs, student.boxes, clean_bn_stats)
                num_parts = part_logits.shape[1]
                part_ce = F.cross_entropy(
                    part_logits.flatten(0, 1).float(),
                    labels.repeat_interleave(num_parts),
                    reduction='none').view(-1, num_parts)
            rank_part_ce, ranked_samples = part_ce, {}
            if not self.ranks_this_step(sampling):
                # No ranking loss on this step, so no target to compute.
                rank_part_ce = None
            elif self.rank_target in ('clean_features', 'occlusion', 'consistency'):
                if self.rank_target == 'clean_features':
                    rank_part_ce, sample_ce = self.clean_feature_ce(student, labels,
                                                                    inputs.shape[-2:])
                elif self.rank_target == 'consistency':
                    rank_part_ce, sample_ce = self.consistency_target(student,
                                                                      inputs.shape[-2:])
                else:
                    rank_part_ce, sample_ce = self.occlusion_ce(inputs, student, labels,
                                                                clean_bn_stats)
                if sampling:
                    ranked_samples = dict(sample_scores=student.sample_scores,
                                          sample_ce=sample_ce)
            elif sampling and self.window_loss is not None:
                rank_part_ce, sample_ce, window_ce = self.trained_window_ce(
                    inputs, student.boxes, student.sample_boxes, labels,
                    clean_bn_stats, student.logits)
                losses['loss_window'] = weight_s * self.part_loss_scale * \
                    self.window_loss['loss_weight'] * window_ce
                ranked_samples = dict(sample_scores=student.sample_scores,
                                      sample_ce=sample_ce)
            elif sampling:
                rank_part_ce, sample_ce = self.ranked_sample_ce(
                    inputs, student.boxes, student.sample_boxes, labels, part_ce,
                    clean_bn_stats, image_logits=student.logits)
                ranked_samples = dict(sample_scores=student.sample_scores,
                                      sample_ce=sample_ce)
            sppn_losses = self.sppn_head.loss(student.boxes, student.box_scores,
                                              rank_part_ce, student.object_area,
                                              **ranked_samples)
            if self.loss_concentrate is not None:
                sppn_losses['loss_con'] = self.loss_concentrate(part_logits, labels)
            part_weight = weight_s * self.part_loss_scale
            losses.update({k: part_weight * v for k, v in sppn_losses.items()})

        if not self.with_teacher:
            return losses

        teacher_in, saliency = self.teacher_input(inputs, student, data_samples)
        teacher = self.teacher(teacher_in, saliency)
        teacher_pred = self.teacher.head._get_loss(teacher.logits, data_samples)
        losses['loss_teacher'] = weight_t * teacher_pred.pop('loss')
        losses.update({f'teacher_{k}': v for k, v in teacher_pred.items()})
        if teacher.grouping_loss is not None:
            losses['loss_group'] = weight_t * teacher.grouping_loss

        if self.with_distill:
            if self.distill_cfg['gate'] == 'teacher_ahead':
                gate = self.teacher_ahead_gate(student.logits, teacher.logits, labels)
            else:
                gate = distill_gate(student.logits, teacher.logits, labels,
                                    self.distill_cfg['gate'])
            hint_pred = self.hint_regressor(student.feats[self.distill_cfg['student_index']])
            hint = teacher.feats[self.distill_cfg['teacher_index']]
            gate_weight = None if self.distill_cfg['gate'] == 'all' else gate
            losses['loss_hint'] = weight_s * self.loss_hint(hint_pred, hint,
                                                            weight=gate_weight)
            losses['loss_soft'] = weight_s * self.loss_soft(
                student.logits, teacher.logits, weight=gate_weight)
            losses['distill_kept'] = gate.mean()

        if self.with_fusion:
            fused = self.fused_logits(student_prediction, teacher.logits)
            fusion_pred = self.fusion_head._get_loss(fused, data_samples)
            losses['loss_csf'] = weight_f * fusion_pred.pop('loss')
            losses.update({f'fusion_{k}': v for k, v in fusion_pred.items()})
        return losses

    @torch.no_grad()
    def teacher_ahead_gate(self, student_logits: Tensor, teacher_logits: Tensor,
                           labels: Tensor) -> Tensor:
        """Distil the whole batch while the teacher is ahead of the student
        (``distill.gate='teacher_ahead'``), none of it otherwise.

        Updates the running means of the ground truth's probability under
        the teacher and under the student (momentum ``gate_momentum``, the
        batch means averaged over the ranks first, so that every rank gates
        alike) and compares them. Both means start at zero with the same
        momentum, so no bias correction changes the comparison. Why: a
        teacher behind the student pulls it back, and with it the two
        streams the fusion combines toward each other.

        Args:
            student_logits (Tensor): (B, K) z_s.
            teacher_logits (Tensor): (B, K) z_t.
            labels (Tensor): (B,) ground-truth classes.

        Returns:
            Tensor: (B,) weights, all 1 or all 0, in ``student_logits``' dtype.
        """
        batch_means = torch.stack([label_probability(teacher_logits, labels).mean(),
                                   label_probability(student_logits, labels).mean()])
        all_reduce(batch_means, op='mean')  # in place; no-op on one process
        momentum = self.distill_cfg['gate_momentum']
        self.distill_true_prob.mul_(momentum).add_((1.0 - momentum) * batch_means)
        ahead = bool(self.distill_true_prob[0] > self.distill_true_prob[1])
        return student_logits.new_full((student_logits.shape[0], ), float(ahead))

    def predict_logits(self, inputs: Tensor,
                       data_samples: Optional[List[DataSample]] = None
                       ) -> Tuple[Tensor, Dict[str, Optional[Tensor]]]:
        """The prediction logits and everything shown to users.

        ``data_samples`` are read only by the oracle control
        (``part_pool.boxes='ground_truth'``).

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
            # Boxes come sorted by SPPN score, so the first M are the top M.
            # All N part images, composed as in training; the first M count.
            student_streams.append(self.part_logits(inputs, student.boxes)[:, :top_m])
        if self.part_pool is not None and self.part_pool['predict']:
            student_streams.append(self.part_pool_logits(student, inputs.shape[-2:],
                                                         data_samples))
        if len(student_streams) > 1:
            student = student._replace(
                logits=torch.cat(student_streams, dim=1).mean(dim=1))
        extras = dict(student_logits=student.logits, teacher_logits=None,
                      part_boxes=student.boxes, part_scores=student.box_scores,
                      heatmap=student.heatmap)
        if not self.with_teacher:
            return student.logits, extras
        teacher_in, saliency = self.teacher_input(inputs, student, data_samples)
        teacher_logits = self.teacher(teacher_in, saliency,
                                      with_grouping_loss=False).logits
        extras['teacher_logits'] = teacher_logits
        if not self.with_fusion:
            return teacher_logits, extras
        return self.fused_logits(student.logits, teacher_logits), extras

    def predict(self, inputs: Tensor, data_samples: Optional[List[DataSample]] = None,
                **kwargs) -> List[DataSample]:
        """Fused prediction; also student/teacher scores, part boxes and scores,
        and the heatmap on each data sample (see class doc)."""
        logits, extras = self.predict_logits(inputs, data_samples)
        if data_samples is None:
            data_samples = [DataSample() for _ in range(inputs.shape[0])]
        scores = F.softmax(logits.float(), dim=1)
        labels = scores.argmax(dim=1, keepdim=True)
        student_scores = F.softmax(extras['student_logits'].float(), dim=1)
        teacher_scores = None
        if extras['teacher_logits'] is not None:
            teacher_scores = F.softmax(extras['teacher_logits'].float(), dim=1)
        for index, sample in enumerate(data_samples):
            sample.set_pred_score(scores[index]).set_pred_label(labels[index])
            sample.set_field(student_scores[index], 'student_score', dtype=Tensor)
            if teacher_scores is not None:
                sample.set_field(teacher_scores[index], 'teacher_score', dtype=Tensor)
            if extras['part_boxes'] is not None:
                sample.set_field(extras['part_boxes'][index].detach(), 'part_boxes',
                                 dtype=Tensor)
                sample.set_field(extras['part_scores'][index].detach(), 'part_scores',
                                 dtype=Tensor)
            if extras['heatmap'] is not None:
                sample.set_field(extras['heatmap'][index].detach(), 'heatmap',
                                 dtype=Tensor)
        return data_samples


def _build_part_image_generator(cfg: Optional[dict]) -> nn.Module:
    """The part image generator; a dict without ``type`` configures
    ``PartImageGenerator``."""
    if isinstance(cfg, nn.Module):
        return cfg
    cfg = dict(cfg or {})
    cfg.setdefault('type', 'PartImageGenerator')
    try:
        return MODELS.build(cfg)
    except TypeError as error:
        raise ValueError(f'DAFClassifier: bad part_images config {cfg!r}: {error}') \
            from error

