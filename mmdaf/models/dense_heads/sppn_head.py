"""SPPN: saliency part proposal network (paper Sec. 3.3)."""
import copy
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmdet.registry import MODELS, TASK_UTILS
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from ..utils.anchor_candidates import DenseCandidates, anchor_mask_cells, select_candidates
from ..utils.conv_tower import conv_tower
from ..utils.part_nms import first_nms_survivors, pick_first_n
from ..utils.prior_cache import cached_build, prior_key
from .rank_sampling import RankSamplingMixin

# Default anchors for PARTS, not objects. A part is roughly 1/4 to 1/2 of the
# object's side; at input 448 an object spans about 200-450 px, so parts span
# about 50-225 px. octave_base_scale=6 with 2 scales per octave on strides
# 8/16/32 gives square-equivalent sides 48, 68 | 96, 136 | 192, 272 px, and the
# three aspect ratios cover elongated parts (tails, wings, beaks). Anchor
# centres sit in the middle of their cell (center_offset=0.5), so on the
# stride-8 level they coincide with the location heatmap's cell centres.
DEFAULT_ANCHOR_GENERATOR = dict(
    type='AnchorGenerator',
    strides=[8, 16, 32],
    ratios=[0.5, 1.0, 2.0],
    octave_base_scale=6,
    scales_per_octave=2,
    center_offset=0.5)
DEFAULT_BBOX_CODER = dict(
    type='DeltaXYWHBBoxCoder',
    target_means=[0.0, 0.0, 0.0, 0.0],
    target_stds=[1.0, 1.0, 1.0, 1.0])
DEFAULT_LOSS_RANK = dict(type='PartRankingLoss', margin=1.0, loss_weight=1.0)
DEFAULT_LOSS_OVERLAP = dict(type='PartOverlapLoss', alpha=1.0, loss_weight=1.0)
DEFAULT_LOSS_AREA = dict(type='PartAreaLoss', loss_weight=1.0)
# RetinaHead's init: small normal weights, so initial deltas are near zero.
DEFAULT_INIT_CFG = dict(type='Normal', layer='Conv2d', std=0.01, bias=0.0)
# Tensors kept by the prior cache: a few input sizes (multi-scale training,
# evaluation at another size) times a few derived tensors each.
PRIOR_CACHE_SIZE = 32
# SPPNHead runs NMS on this many top-k entries per part first (64 for N = 4);
# a trained R18 DAF on the synthetic set, at 64 and 128 px, found its N-th
# survivor within the first 20.
NMS_PREFIX_PER_PART = 16


@MODELS.register_module()
class SPPNHead(RankSamplingMixin, BaseModule):
    """RetinaNet-like part proposal head trained without box annotations.

    On every FPN level (weights shared across levels): a tower of
    ``stacked_convs`` 3x3 conv + ReLU followed by a 3x3 score conv (one saliency
    score per anchor, raw and unbounded, as NTS-Net's ranking hinge expects), and
    a separate tower followed by a 3x3 regression conv (4 deltas per anchor,
    decoded by ``bbox_coder``).

    :meth:`propose` keeps the anchors whose centre lies in the location
    heatmap's object mask, decodes them, takes the ``pre_nms_topk`` best per
    image, runs NMS at ``nms_iou_thr`` and returns exactly ``num_parts`` boxes
    with their scores, still attached to the graph. Supervision comes from the
    part images (:meth:`loss`): a ranking loss on the scores and overlap/area
    priors on the boxes.

    Args:
        in_channels (int): channels of the FPN outputs. Defaults to 256.
        feat_channels (int): channels of the towers. Defaults to 256.
        stacked_convs (int): conv + ReLU layers per tower. Defaults to 2.
        num_parts (int): N, boxes returned per image. Defaults to 4 (CUB).
        pre_nms_topk (int): candidates per image kept before NMS. Defaults to
            1000.
        nms_iou_thr (float): NMS IoU threshold. Defaults to 0.25 (DESIGN.md).
        anchor_generator (dict): mmdet prior generator config; default sizes
            suit parts (see ``DEFAULT_ANCHOR_GENERATOR``).
        bbox_coder (dict): mmdet box coder config. Defaults to
            ``DeltaXYWHBBoxCoder`` with unit stds (RetinaNet's).
        loss_rank (dict): score ranking loss config (mmdet MODELS).
        loss_overlap (dict): R_IOU loss config (mmdet MODELS).
        loss_area (dict): R_area loss config (mmdet MODELS).
        regress_boxes (bool): False scores fixed anchors and regresses nothing,
            as NTS-Net does: the boxes are the chosen anchors (clipped to the
            image) and the regression tower is not built. True (default)
            decodes per-anchor deltas, trained by R_IOU and R_area (the part
            images detach the boxes).
        init_cfg (dict or list[dict], optional): initialisation config.
            Defaults to normal(std=0.01) on every conv with zero bias,
            RetinaHead's choice, so that initial deltas are near zero.
        rank_samples (int): K > 0 also draws K random candidate anchors per
            image in training (:meth:`sample_anchors`); the classifier ranks
            them together with the N proposals, using single-box part images.
            Without them the ranking loss only ever orders the N boxes the
            head already scores highest, so anchors it never proposes get no
            content signal (docs/benchmarks.md, "Why the defaults").
            Defaults to 0 (the paper).
        rank_interval (int): with ``rank_samples``, draw the samples and
            apply the ranking loss on every k-th training forward only, the
            loss multiplied by k: the same expected ranking gradient per step
            at 1/k of the sampled anchors' cost (their single-box part images
            are most of a training step, benchmarks/speed.py). The other
            steps add a ranking loss of zero (that keeps the scores in the
            graph, for DDP), and the classifier computes no ranking target
            for them (no windows, no part pass unless ``loss_concentrate``).
            A proposals-only ranking on those steps would teach the inverted
            order that ``rank_samples`` fixes. The count
            is per training forward and is not saved in checkpoints: a
            resumed run may shift which steps rank. Defaults to 1 (every
            step).
        tower_norm_groups (int): G > 0 puts a GroupNorm with G groups
            between each tower conv and its ReLU (mmdet's RetinaNet with
            ``norm_cfg=dict(type='GN')``), which keeps the pre-activations
            centred whatever the scale of the weights. Without it (0, the
            default) the demo's 32-channel score tower ended with every ReLU
            at zero and constant scores (docs/benchmarks.md, "Why the defaults").
    """

    def __init__(self,
                 in_channels: int = 256,
                 feat_channels: int = 256,
                 stacked_convs: int = 2,
                 num_parts: int = 4,
                 pre_nms_topk: int = 1000,
                 nms_iou_thr: float = 0.25,
                 anchor_generator: dict = DEFAULT_ANCHOR_GENERATOR,
                 bbox_coder: dict = DEFAULT_BBOX_CODER,
                 loss_rank: dict = DEFAULT_LOSS_RANK,
                 loss_overlap: dict = DEFAULT_LOSS_OVERLAP,
                 loss_area: dict = DEFAULT_LOSS_AREA,
                 regress_boxes: bool = True,
                 init_cfg: Optional[dict] = DEFAULT_INIT_CFG,
                 rank_samples: int = 0,
                 rank_interval: int = 1,
                 tower_norm_groups: int = 0):
        super().__init__(init_cfg=init_cfg)
        if num_parts < 1:
            raise ValueError(f'num_parts must be >= 1, got {num_parts}')
        if pre_nms_topk < num_parts:
            raise ValueError(f'pre_nms_topk must be >= num_parts ({num_parts}), '
                             f'got {pre_nms_topk}')
        if not 0.0 < nms_iou_thr <= 1.0:
            raise ValueError(f'nms_iou_thr must be in (0, 1], got {nms_iou_thr}')
        if stacked_convs < 0:
            raise ValueError(f'stacked_convs must be >= 0, got {stacked_convs}')
        if rank_samples < 0:
            raise ValueError(f'rank_samples must be >= 0, got {rank_samples}')
        if rank_interval < 1:
            raise ValueError(f'rank_interval must be >= 1, got {rank_interval}')
        if tower_norm_groups < 0 or (tower_norm_groups > 0
                                     and feat_channels % tower_norm_groups):
            raise ValueError(f'tower_norm_groups must be 0 or divide feat_channels '
                             f'({feat_channels}), got {tower_norm_groups}')
        if rank_interval > 1 and rank_samples == 0:
            raise ValueError(f'rank_interval={rank_interval} needs rank_samples > 0 '
                             '(it schedules the sampled anchors)')
        self.num_parts = num_parts
        self.rank_samples = rank_samples
        self.rank_interval = rank_interval
        self._rank_step_count = 0
        self.regress_boxes = regress_boxes
        self.pre_nms_topk = pre_nms_topk
        self.nms_iou_thr = nms_iou_thr
        # Anchors and what follows from them alone (candidate geometry, fixed
        # boxes) depend only on the feature-map and input sizes, dtype and
        # device; rebuilding them costs more than the head's post-processing
        # (benchmarks/speed.py). A plain dict: not in the state dict.
        self._prior_cache: Dict[Hashable, object] = {}

        self.prior_generator = TASK_UTILS.build(_in_mmdet(anchor_generator))
        self.bbox_coder = TASK_UTILS.build(_in_mmdet(bbox_coder))
        anchors_per_level = set(self.prior_generator.num_base_priors)
        if len(anchors_per_level) != 1:
            raise ValueError('anchor_generator must give every level the same '
                             f'number of anchors, got '
                             f'{self.prior_generator.num_base_priors}')
        self.num_anchors = anchors_per_level.pop()

        self.score_tower = conv_tower(in_channels, feat_channels, stacked_convs,
                                      tower_norm_groups)
        tower_channels = feat_channels if stacked_convs > 0 else in_channels
        self.score_conv = nn.Conv2d(tower_channels, self.num_anchors, 3, padding=1)
        if regress_boxes:
            self.reg_tower = conv_tower(in_channels, feat_channels, stacked_convs,
                                        tower_norm_groups)
            self.reg_conv = nn.Conv2d(tower_channels, self.num_anchors * 4, 3,
                                      padding=1)

        self.loss_rank = MODELS.build(_in_mmdet(loss_rank))
        self.loss_overlap = MODELS.build(_in_mmdet(loss_overlap))
        self.loss_area = MODELS.build(_in_mmdet(loss_area))

    @property
    def num_levels(self) -> int:
        return self.prior_generator.num_levels

    def forward(self, feats: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Dense scores and deltas on every level.

        Args:
            feats (Sequence[Tensor]): FPN levels, finest first, each
                (B, in_channels, H_l, W_l).

        Returns:
            tuple: ``scores`` list of (B, A, H_l, W_l) and ``deltas`` list of
            (B, A * 4, H_l, W_l), A = anchors per location; the deltas are
            zeros without ``regress_boxes``.
        """
        if len(feats) != self.num_levels:
            raise ValueError(f'SPPNHead expects {self.num_levels} feature levels '
                             f'(one per anchor stride), got {len(feats)}')
        scores = [self.score_conv(self.score_tower(feat)) for feat in feats]
        if not self.regress_boxes:
            deltas = [score.new_zeros((score.shape[0], self.num_anchors * 4,
                                       *score.shape[-2:])) for score in scores]
            return scores, deltas
        deltas = [self.reg_conv(self.reg_tower(feat)) for feat in feats]
        return scores, deltas

    def propose(self,
                feats: Sequence[Tensor],
                img_shape: Tuple[int, int],
                object_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Top-N part boxes and scores per image, graph kept.

        Candidates are the anchors whose centre falls in ``object_mask``
        (nearest lookup at mask resolution); all anchors when the mask is None
        or excludes every anchor of an image. Exactly N boxes come back: when
        fewer than N survive NMS the best suppressed candidates fill up, and
        when there are fewer than N candidates at all they repeat.

        Args:
            feats (Sequence[Tensor]): FPN levels, finest first.
            img_shape (Tuple[int, int]): (H, W) of the network input; boxes are
                clipped to it.
            object_mask (Tensor, optional): (B, 1, h, w) bool object mask over
                the whole input (any grid size).

        Returns:
            tuple: ``boxes`` (B, N, 4) xyxy input pixels and ``scores`` (B, N),
            sorted by score descending; both carry gradient (boxes to the
            regression branch, scores to the score branch).
        """
        dense = self._dense_candidates(feats, img_shape, object_mask)
        return self._top_n(dense, img_shape)

    def _dense_candidates(self, feats: Sequence[Tensor], img_shape: Tuple[int, int],
                          object_mask: Optional[Tensor]) -> DenseCandidates:
        """:meth:`dense_scores` with the candidate mask of its anchors, both
        looked up in the prior cache."""
        anchors, scores, deltas = self.dense_scores(feats)
        key = prior_key([feat.shape[-2:] for feat in feats], scores.dtype,
                        scores.device)
        img_shape = (int(img_shape[0]), int(img_shape[1]))
        mask_size = None if object_mask is None else tuple(object_mask.shape[-2:])
        cells = self._cached(
            ('candidates', key, img_shape, mask_size),
            lambda: anchor_mask_cells(anchors, img_shape, mask_size))
        is_candidate = select_candidates(cells, object_mask, scores.shape[0],
                                         anchors.shape[0], anchors.device)
        fixed_boxes = None
        if not self.regress_boxes:
            # Zero deltas: the decoded boxes depend on the anchors alone.
            fixed_boxes = self._cached(
                ('fixed_boxes', key, img_shape),
                lambda: self.bbox_coder.decode(anchors, torch.zeros_like(anchors),
                                               max_shape=img_shape))
        return DenseCandidates(anchors, scores, deltas, is_candidate, fixed_boxes)

    def _boxes_at(self, dense: DenseCandidates, index: Tensor,
                  img_shape: Tuple[int, int]) -> Tensor:
        """(B, K, 4) decoded boxes of the anchors at ``index`` (B, K)."""
        if dense.fixed_boxes is not None:
            return dense.fixed_boxes[index]
        num_imgs, num_boxes = index.shape
        return self.bbox_coder.decode(
            dense.anchors[index].reshape(-1, 4),
            dense.deltas.gather(1, index[..., None].expand(-1, -1, 4)).reshape(-1, 4),
            max_shape=tuple(img_shape)).reshape(num_imgs, num_boxes, 4)

    def _top_n(self, dense: DenseCandidates,
               img_shape: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        scores, is_candidate = dense.scores, dense.is_candidate
        num_topk = min(self.pre_nms_topk, dense.anchors.shape[0])
        ranking = scores.detach().masked_fill(~is_candidate, float('-inf'))
        topk_idx = ranking.topk(num_topk, dim=1).indices  # (B, k), by score
        topk_valid = is_candidate.gather(1, topk_idx)
        topk_scores = scores.gather(1, topk_idx)

        # Greedy NMS decides each entry from the entries before it, so a prefix
        # of the top-k list gets the same answers as the whole list. The N
        # survivors usually lie in the first few dozen entries: NMS runs on a
        # prefix first and on the whole list only when some image needs more
        # (the check reads one bool back from the device).
        num_first = min(num_topk, NMS_PREFIX_PER_PART * self.num_parts)
        # Decoding is per box: a prefix decodes as in the whole list.
        boxes = self._boxes_at(dense, topk_idx[:, :num_first], img_shape)
        survived = self._nms_survivors(boxes, topk_scores[:, :num_first],
                                       topk_valid[:, :num_first])
        if num_first < num_topk and not bool(
                (survived.sum(dim=1) >= self.num_parts).all()):
            num_first = num_topk
            boxes = self._boxes_at(dense, topk_idx, img_shape)
            survived = self._nms_survivors(boxes, topk_scores, topk_valid)
        picked = pick_first_n(survived, topk_valid[:, :num_first],
                              topk_scores[:, :num_first], self.num_parts)
        part_boxes = boxes.gather(1, picked[..., None].expand(-1, -1, 4))
        return part_boxes, topk_scores.gather(1, picked)

    def grid_anchors(self, featmap_sizes: Sequence[Tuple[int, int]],
                     dtype: torch.dtype, device: torch.device) -> Tensor:
        """All levels' anchors, flattened: mmdet's ``grid_priors``, cached.

        The same sizes, dtype and device return the same tensor object, so
        never modify it in place.

        Args:
            featmap_sizes (Sequence[Tuple[int, int]]): (H_l, W_l) per level,
                finest first.
            dtype (torch.dtype): dtype of the anchors.
            device (torch.device): device of the anchors.

        Returns:
            Tensor: (M, 4) xyxy anchors in input pixels, in mmdet's prior
            order ((y, x, anchor) per level, finest level first).
        """
        key = prior_key(featmap_sizes, dtype, device)
        sizes = list(key[0])
        return self._cached(('anchors', key), lambda: torch.cat(
            self.prior_generator.grid_priors(sizes, dtype=dtype, device=device)))

    def _cached(self, key: Hashable, build: Callable[[], object]):
        """``build()``, computed once per key (:func:`cached_build`, at most
        ``PRIOR_CACHE_SIZE`` entries)."""
        return cached_build(self._prior_cache, key, build, PRIOR_CACHE_SIZE)

    def dense_scores(self, feats: Sequence[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """Anchors, scores and deltas of every level, flattened.

        Returns:
            tuple: ``anchors`` (M, 4) xyxy input pixels (cached by
            :meth:`grid_anchors`: do not modify in place), ``scores`` (B, M)
            and ``deltas`` (B, M, 4), in mmdet's prior order ((y, x, anchor)
            per level, finest level first).
        """
        scores_per_level, deltas_per_level = self(feats)
        num_imgs = scores_per_level[0].shape[0]
        featmap_sizes = [scores.shape[-2:] for scores in scores_per_level]
        anchors = self.grid_anchors(featmap_sizes, scores_per_level[0].dtype,
                                    scores_per_level[0].device)
        scores = torch.cat([
            level.permute(0, 2, 3, 1).reshape(num_imgs, -1)
            for level in scores_per_level
        ], dim=1)
        deltas = torch.cat([
            level.permute(0, 2, 3, 1).reshape(num_imgs, -1, 4)
            for level in deltas_per_level
        ], dim=1)
        return anchors, scores, deltas

    def anchor_candidates(self, anchors: Tensor, img_shape: Tuple[int, int],
                          object_mask: Optional[Tensor],
                          num_imgs: int) -> Tensor:
        """Which anchors are candidates: centre inside the object mask.

        Args:
            anchors (Tensor): (M, 4) xyxy anchors in input pixels.
            img_shape (Tuple[int, int]): (H, W) of the input.
            object_mask (Tensor, optional): (B, 1, h, w) bool.
            num_imgs (int): B, used when ``object_mask`` is None.

        Returns:
            Tensor: (B, M) bool; an image whose mask keeps no anchor keeps all.
        """
        mask_size = None if object_mask is None else tuple(object_mask.shape[-2:])
        cells = anchor_mask_cells(anchors, img_shape, mask_size)
        return select_candidates(cells, object_mask, num_imgs, anchors.shape[0],
                                 anchors.device)

    def _nms_survivors(self, boxes: Tensor, scores: Tensor, valid: Tensor) -> Tensor:
        """(B, k) bool: the first N valid candidates that greedy NMS keeps
        (:func:`first_nms_survivors`).

        A short list (at most ``NMS_PREFIX_PER_PART * num_parts`` entries,
        the prefix :meth:`_top_n` tries first) gets all its pairwise overlaps
        at once; a long one gets the kept box's overlaps round by round.

        Args:
            boxes (Tensor): (B, k, 4) xyxy candidate boxes, in top-k order.
            scores (Tensor): (B, k) their scores; not read (the order says
                all), kept for the callers' signature.
            valid (Tensor): (B, k) bool, which entries are candidates.

        Returns:
            Tensor: (B, k) bool.
        """
        pairwise = valid.shape[1] <= NMS_PREFIX_PER_PART * self.num_parts
        return first_nms_survivors(boxes, valid, self.num_parts, self.nms_iou_thr,
                                   pairwise)

    def predict(self,
                feats: Sequence[Tensor],
                batch_img_metas: List[dict],
                object_mask: Optional[Tensor] = None) -> List[InstanceData]:
        """Part boxes per image in mmdet's result form (detached).

        The proposal runs on the padded batch input shape (``batch_input_shape``
        of the first meta, else its ``img_shape``: the caller should pass the
        input tensor's (H, W) there); boxes are then clipped to each image's
        own ``img_shape``.

        Args:
            feats (Sequence[Tensor]): FPN levels, finest first.
            batch_img_metas (List[dict]): one meta dict per image.
            object_mask (Tensor, optional): (B, 1, h, w) bool object mask.

        Returns:
            List[InstanceData]: per image, ``bboxes`` (N, 4) and ``scores`` (N,).
        """
        if len(batch_img_metas) != feats[0].shape[0]:
            raise ValueError(f'batch_img_metas has {len(batch_img_metas)} entries, '
                             f'the features have batch size {feats[0].shape[0]}')
        first_meta = batch_img_metas[0]
        input_shape = first_meta.get('batch_input_shape', first_meta['img_shape'])
        boxes, scores = self.propose(feats, tuple(input_shape[:2]), object_mask)
        results = []
        for img_boxes, img_scores, meta in zip(boxes.detach(), scores.detach(),
                                               batch_img_metas):
            height, width = meta.get('img_shape', input_shape)[:2]
            img_boxes = torch.stack([
                img_boxes[:, 0].clamp(0, width), img_boxes[:, 1].clamp(0, height),
                img_boxes[:, 2].clamp(0, width), img_boxes[:, 3].clamp(0, height)
            ], dim=1)
            results.append(InstanceData(bboxes=img_boxes, scores=img_scores))
        return results

    def loss(self, part_boxes: Tensor, part_scores: Tensor, part_ce: Optional[Tensor],
             object_area: Tensor, sample_scores: Optional[Tensor] = None,
             sample_ce: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """SPPN losses from the part images' evaluation.

        Args:
            part_boxes (Tensor): (B, N, 4) boxes from :meth:`propose`.
            part_scores (Tensor): (B, N) scores from :meth:`propose`.
            part_ce (Tensor, optional): (B, N) ground-truth-class cross
                entropy of each part image; detached here (a target, not a
                path into the backbone). May be None only on a step that ranks
                nothing (``rank_interval`` k > 1, no samples given).
            object_area (Tensor): (B,) object area S in input pixels; detached.
            sample_scores (Tensor, optional): (B, K) scores of the sampled
                anchors (:meth:`sample_anchors`), ranked together with the N
                proposals; their boxes take no part in R_IOU and R_area.
            sample_ce (Tensor, optional): (B, K) their part images' cross
                entropies; given exactly when ``sample_scores`` is.

        Returns:
            dict: ``loss_rank``, ``loss_overlap``, ``loss_area`` scalars. With
            ``rank_interval`` k > 1, ``loss_rank`` is k times the ranking loss
            when samples are given and zero otherwise.
        """
        if part_boxes.dim() != 3 or part_boxes.shape[-1] != 4:
            raise ValueError(
                f'part_boxes must be (B, N, 4), got {tuple(part_boxes.shape)}')
        if part_scores.shape != part_boxes.shape[:2]:
            raise ValueError(f'part_scores must be (B, N) = '
                             f'{tuple(part_boxes.shape[:2])}, got '
                             f'{tuple(part_scores.shape)}')
        loss_rank = self._rank_loss(part_scores, part_ce, sample_scores, sample_ce)
        return dict(
            loss_rank=loss_rank,
            loss_overlap=self.loss_overlap(part_boxes),
            loss_area=self.loss_area(part_boxes, object_area.detach()))


def _in_mmdet(cfg: dict) -> dict:
    """Copy of ``cfg`` that resolves in mmdet's scope unless it names another.

    Without it, building under the default scope 'mmpretrain' would look up
    e.g. ``AnchorGenerator`` in mmpretrain, where it does not exist.
    """
    cfg = copy.deepcopy(dict(cfg))
    cfg.setdefault('_scope_', 'mmdet')
    return cfg
