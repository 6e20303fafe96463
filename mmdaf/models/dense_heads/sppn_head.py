"""SPPN: saliency part proposal network (paper Sec. 3.3)."""
import copy
from typing import Callable, Dict, Hashable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS, TASK_UTILS
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

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


class DenseCandidates(NamedTuple):
    """One dense pass of the head over a batch, with its candidate anchors.

    Attributes:
        anchors (Tensor): (M, 4) xyxy anchors in input pixels (cached, shared
            between calls: never modify it in place).
        scores (Tensor): (B, M) raw anchor scores.
        deltas (Tensor): (B, M, 4) box deltas.
        is_candidate (Tensor): (B, M) bool candidate mask.
        fixed_boxes (Tensor, optional): (M, 4) the anchors decoded with zero
            deltas and clipped to the input (cached), without
            ``regress_boxes``; None otherwise.
    """

    anchors: Tensor
    scores: Tensor
    deltas: Tensor
    is_candidate: Tensor
    fixed_boxes: Optional[Tensor]


@MODELS.register_module()
class SPPNHead(BaseModule):
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
            decodes per-anchor deltas, which the part images train only when
            their generator is differentiable in the boxes
            (``PartImageGenerator(soft_edge>0)``); otherwise only R_IOU and
            R_area move them.
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
        inside_image (bool): True keeps only the anchors that lie wholly
            inside the image as candidates (with the object mask, where
            given): a prior that needs no heatmap against proposals on the
            image border, whose part images keep mostly nothing. Defaults to
            False (the paper).
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
                 inside_image: bool = False,
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
        self.inside_image = inside_image
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

        self.score_tower = _conv_tower(in_channels, feat_channels, stacked_convs,
                                       tower_norm_groups)
        tower_channels = feat_channels if stacked_convs > 0 else in_channels
        self.score_conv = nn.Conv2d(tower_channels, self.num_anchors, 3, padding=1)
        if regress_boxes:
            self.reg_tower = _conv_tower(in_channels, feat_channels, stacked_convs,
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

    def propose_and_sample(self,
                           feats: Sequence[Tensor],
                           img_shape: Tuple[int, int],
                           object_mask: Optional[Tensor] = None
                           ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`propose` and :meth:`sample_anchors` (``rank_samples``
        anchors) from one dense pass of the head, as the training step needs.

        Returns:
            tuple: ``boxes`` (B, N, 4), ``scores`` (B, N), ``sample_boxes``
            (B, K, 4), ``sample_scores`` (B, K); all keep their graph.
        """
        dense = self._dense_candidates(feats, img_shape, object_mask)
        boxes, scores = self._top_n(dense, img_shape)
        sample_boxes, sample_scores = self._draw(dense, img_shape, self.rank_samples)
        return boxes, scores, sample_boxes, sample_scores

    def _dense_candidates(self, feats: Sequence[Tensor], img_shape: Tuple[int, int],
                          object_mask: Optional[Tensor]) -> DenseCandidates:
        """:meth:`dense_scores` with the candidate mask of its anchors, both
        looked up in the prior cache."""
        anchors, scores, deltas = self.dense_scores(feats)
        key = _prior_key([feat.shape[-2:] for feat in feats], scores.dtype,
                         scores.device)
        img_shape = (int(img_shape[0]), int(img_shape[1]))
        mask_size = None if object_mask is None else tuple(object_mask.shape[-2:])
        inside, cells = self._cached(
            ('candidates', key, img_shape, mask_size),
            lambda: self._candidate_geometry(anchors, img_shape, mask_size))
        is_candidate = self._select_candidates(inside, cells, object_mask,
                                               scores.shape[0], anchors.shape[0],
                                               anchors.device)
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
        picked = self._pick_n(survived, topk_valid[:, :num_first],
                              topk_scores[:, :num_first])
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
        key = _prior_key(featmap_sizes, dtype, device)
        sizes = list(key[0])
        return self._cached(('anchors', key), lambda: torch.cat(
            self.prior_generator.grid_priors(sizes, dtype=dtype, device=device)))

    def _cached(self, key: Hashable, build: Callable[[], object]):
        """``build()``, computed once per key.

        Built without autograd and outside inference mode, so that an entry
        made in an evaluation under ``torch.inference_mode`` still serves a
        later training step. The oldest entry goes when the cache is full.
        """
        if key in self._prior_cache:
            return self._prior_cache[key]
        with torch.inference_mode(False), torch.no_grad():
            value = build()
        if len(self._prior_cache) >= PRIOR_CACHE_SIZE:
            self._prior_cache.pop(next(iter(self._prior_cache)))
        self._prior_cache[key] = value
        return value

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

    def sample_anchors(self,
                       feats: Sequence[Tensor],
                       img_shape: Tuple[int, int],
                       object_mask: Optional[Tensor] = None,
                       num_samples: Optional[int] = None,
                       generator: Optional[torch.Generator] = None
                       ) -> Tuple[Tensor, Tensor]:
        """Boxes and scores of anchors drawn uniformly among the candidates.

        These are the extra boxes the ranking loss orders (``rank_samples``):
        drawn among the anchors whose centre lies in ``object_mask``, without
        replacement unless some image of the batch has fewer than K
        candidates (then with replacement, for the whole batch).

        Args:
            feats (Sequence[Tensor]): FPN levels, finest first.
            img_shape (Tuple[int, int]): (H, W) of the network input.
            object_mask (Tensor, optional): (B, 1, h, w) bool object mask.
            num_samples (int, optional): K; defaults to ``rank_samples``.
            generator (torch.Generator, optional): random source of the draw.

        Returns:
            tuple: ``boxes`` (B, K, 4) xyxy input pixels, clipped (decoded with
            the deltas under ``regress_boxes``), and ``scores`` (B, K), still
            attached to the graph.
        """
        num_samples = self.rank_samples if num_samples is None else num_samples
        if num_samples < 1:
            raise ValueError(f'num_samples must be >= 1, got {num_samples}')
        dense = self._dense_candidates(feats, img_shape, object_mask)
        return self._draw(dense, img_shape, num_samples, generator)

    def _draw(self, dense: DenseCandidates, img_shape: Tuple[int, int], num_samples: int,
              generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        is_candidate = dense.is_candidate
        enough = bool((is_candidate.sum(dim=1) >= num_samples).all())
        picked = torch.multinomial(is_candidate.float(), num_samples,
                                   replacement=not enough, generator=generator)  # (B, K)
        return self._boxes_at(dense, picked, img_shape), dense.scores.gather(1, picked)

    def anchor_candidates(self, anchors: Tensor, img_shape: Tuple[int, int],
                          object_mask: Optional[Tensor],
                          num_imgs: int) -> Tensor:
        """Which anchors are candidates: centre inside the object mask and,
        with ``inside_image``, the whole anchor inside the image.

        Args:
            anchors (Tensor): (M, 4) xyxy anchors in input pixels.
            img_shape (Tuple[int, int]): (H, W) of the input.
            object_mask (Tensor, optional): (B, 1, h, w) bool.
            num_imgs (int): B, used when ``object_mask`` is None.

        Returns:
            Tensor: (B, M) bool; an image whose rules keep no anchor keeps all.
        """
        mask_size = None if object_mask is None else tuple(object_mask.shape[-2:])
        inside, cells = self._candidate_geometry(anchors, img_shape, mask_size)
        return self._select_candidates(inside, cells, object_mask, num_imgs,
                                       anchors.shape[0], anchors.device)

    def _candidate_geometry(self, anchors: Tensor, img_shape: Tuple[int, int],
                            mask_size: Optional[Tuple[int, int]]
                            ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """What the candidate rules need of the anchors, image-independent.

        Args:
            anchors (Tensor): (M, 4) xyxy anchors in input pixels.
            img_shape (Tuple[int, int]): (H, W) of the input.
            mask_size (Tuple[int, int], optional): (h, w) of the object mask.

        Returns:
            tuple: ``inside`` (M,) bool, the anchors wholly inside the image
            (None without ``inside_image``), and ``cells`` (M,) long, the
            flat index ``row * w + col`` of the mask cell holding each
            anchor centre (nearest lookup; None without a mask).
        """
        inside = None
        if self.inside_image:
            height, width = img_shape
            inside = ((anchors[:, 0] >= 0) & (anchors[:, 1] >= 0)
                      & (anchors[:, 2] <= width) & (anchors[:, 3] <= height))
        if mask_size is None:
            return inside, None
        mask_h, mask_w = mask_size
        centres_x = (anchors[:, 0] + anchors[:, 2]) / 2
        centres_y = (anchors[:, 1] + anchors[:, 3]) / 2
        cols = (centres_x * mask_w / img_shape[1]).floor().long().clamp(0, mask_w - 1)
        rows = (centres_y * mask_h / img_shape[0]).floor().long().clamp(0, mask_h - 1)
        return inside, rows * mask_w + cols

    @staticmethod
    def _select_candidates(inside: Optional[Tensor], cells: Optional[Tensor],
                           object_mask: Optional[Tensor], num_imgs: int,
                           num_anchors: int, device: torch.device) -> Tensor:
        """(B, M) candidate mask from :meth:`_candidate_geometry`'s tensors."""
        if object_mask is None:
            if inside is None:
                return torch.ones((num_imgs, num_anchors), dtype=torch.bool,
                                  device=device)
            is_candidate = inside.expand(num_imgs, num_anchors)
            return is_candidate | ~is_candidate.any(dim=1, keepdim=True)
        if object_mask.dim() != 4 or object_mask.shape[1] != 1:
            raise ValueError(f'object_mask must be (B, 1, h, w), got '
                             f'{tuple(object_mask.shape)}')
        if object_mask.shape[0] != num_imgs:
            raise ValueError(f'object_mask has batch size {object_mask.shape[0]}, '
                             f'the features have {num_imgs}')
        # One gather over the flattened mask serves the whole batch.
        is_candidate = object_mask[:, 0].bool().flatten(1).index_select(1, cells)
        if inside is not None:
            is_candidate = is_candidate & inside
        return is_candidate | ~is_candidate.any(dim=1, keepdim=True)

    def _nms_survivors(self, boxes: Tensor, scores: Tensor, valid: Tensor) -> Tensor:
        """(B, k) bool: the first N valid candidates that greedy NMS keeps.

        The top-k list is already in NMS order (score descending, ties in
        top-k order, as torchvision's stable sort leaves them), and greedy NMS
        decides each box from the kept boxes before it only. So the first N
        survivors come from N rounds over the whole batch at once: keep each
        image's first live candidate, then drop the candidates it overlaps
        (itself included); later survivors, which :meth:`_pick_n` never
        reaches, are not sought. An image with fewer than N survivors gets all
        of them, as a full NMS would. Overlaps are decided as torchvision's CPU
        ``nms`` decides them (:func:`_iou_above`), so the kept boxes are the
        same.

        A short list (the prefix :meth:`_top_n` tries first) gets all its
        pairwise overlaps at once, which leaves three small ops per round; a
        long one gets the kept box's overlaps round by round.

        Args:
            boxes (Tensor): (B, k, 4) xyxy candidate boxes, in top-k order.
            scores (Tensor): (B, k) their scores; not read (the order says
                all), kept for the callers' signature.
            valid (Tensor): (B, k) bool, which entries are candidates.

        Returns:
            Tensor: (B, k) bool.
        """
        num_topk = valid.shape[1]
        # Coordinates first, (4, B, k + 1), so that the overlaps below run
        # over contiguous rows. A zero box at the end overlaps nothing: the
        # greedy rounds use position k as "no live candidate left".
        coords = F.pad(boxes.detach().float().permute(2, 0, 1), (0, 1))
        areas = (coords[2] - coords[0]) * (coords[3] - coords[1])  # (B, k + 1)
        if num_topk <= NMS_PREFIX_PER_PART * self.num_parts:
            suppresses = _iou_above(coords[..., None], areas[..., None],
                                    coords[:, :, None], areas[:, None],
                                    self.nms_iou_thr)  # (B, k + 1, k + 1)
            # Keeping a candidate removes it; the zero box stays live.
            suppresses.diagonal(dim1=1, dim2=2)[:, :num_topk] = True

            def suppressed_by(first: Tensor) -> Tensor:
                return suppresses.gather(
                    1, first[..., None].expand(-1, -1, num_topk + 1)).squeeze(1)
        else:
            positions = torch.arange(num_topk + 1, device=coords.device)

            def suppressed_by(first: Tensor) -> Tensor:
                kept = coords.gather(2, first.expand(4, -1, -1))  # (4, B, 1)
                above = _iou_above(kept, areas.gather(1, first), coords, areas,
                                   self.nms_iou_thr)  # (B, k + 1)
                return above | ((positions == first) & (first < num_topk))

        return self._greedy_survivors(valid, suppressed_by)

    def _greedy_survivors(self, valid: Tensor,
                          suppressed_by: Callable[[Tensor], Tensor]) -> Tensor:
        """N greedy NMS rounds over (B, k) candidates.

        Args:
            valid (Tensor): (B, k) bool, the candidates, in NMS order.
            suppressed_by (Callable): (B, 1) positions in [0, k] -> (B, k + 1)
                bool, what keeping them removes; position k is a placeholder
                that removes nothing.

        Returns:
            Tensor: (B, k) bool, the kept positions.
        """
        num_imgs, num_topk = valid.shape
        # uint8 for argmax, which returns the first maximum: the best live
        # candidate, or the always live placeholder k once none is left.
        alive = F.pad(valid.to(torch.uint8), (0, 1), value=1)
        kept = []
        for _ in range(self.num_parts):
            first = alive.argmax(dim=1, keepdim=True)  # (B, 1)
            kept.append(first)
            alive = alive.masked_fill(suppressed_by(first), 0)
        survived = valid.new_zeros((num_imgs, num_topk + 1))
        survived.scatter_(1, torch.cat(kept, dim=1), True)
        return survived[:, :num_topk]

    def _pick_n(self, survived: Tensor, valid: Tensor, scores: Tensor) -> Tensor:
        """(B, N) positions into the top-k list: NMS survivors first.

        The top-k list is sorted by score, so a stable sort on the tier
        (0 survivor, 1 suppressed candidate, 2 not a candidate) keeps score order
        within tiers. Positions past the candidate count wrap around (repeat).
        The N picks are finally re-sorted by score.
        """
        tier = torch.full_like(survived, 2, dtype=torch.long)
        tier = tier.masked_fill(valid, 1).masked_fill(survived, 0)
        by_tier = torch.sort(tier, dim=1, stable=True).indices
        num_valid = valid.sum(dim=1, keepdim=True).clamp(min=1)
        slots = torch.arange(self.num_parts, device=valid.device)[None] % num_valid
        picked = by_tier.gather(1, slots)
        order = torch.sort(scores.detach().gather(1, picked), dim=1,
                           descending=True, stable=True).indices
        return picked.gather(1, order)

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

    def samples_this_step(self) -> bool:
        """Whether this training forward draws and ranks sampled anchors.

        Call once per training forward: it advances the step count of
        ``rank_interval``. False whenever ``rank_samples`` is 0.
        """
        if self.rank_samples == 0:
            return False
        samples = self._rank_step_count % self.rank_interval == 0
        self._rank_step_count += 1
        return samples

    def ranks(self, with_samples: bool) -> bool:
        """Whether a training step with or without sampled anchors applies
        the ranking loss: every step with ``rank_interval`` 1 (the N
        proposals alone when no samples are given), only the steps with
        samples otherwise (the others add a ranking loss of zero).

        Args:
            with_samples (bool): whether the step drew sampled anchors.
        """
        return self.rank_interval == 1 or with_samples

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
        if (sample_scores is None) != (sample_ce is None):
            raise ValueError('sample_scores and sample_ce must be given together')
        ranks = self.ranks(with_samples=sample_scores is not None)
        if part_ce is None and ranks:
            raise ValueError('part_ce is None, but this step ranks the boxes '
                             f'(rank_interval={self.rank_interval}, samples '
                             f'{"given" if sample_scores is not None else "not given"})')
        if part_ce is not None and part_ce.shape != part_scores.shape:
            raise ValueError(f'part_ce must be (B, N) = {tuple(part_scores.shape)}, '
                             f'got {tuple(part_ce.shape)}')
        rank_scores, rank_ce = part_scores, part_ce
        if sample_scores is not None:
            if sample_scores.shape[0] != part_scores.shape[0] or \
                    sample_ce.shape != sample_scores.shape:
                raise ValueError(f'sample_scores and sample_ce must both be (B, K) '
                                 f'with B = {part_scores.shape[0]}, got '
                                 f'{tuple(sample_scores.shape)} and '
                                 f'{tuple(sample_ce.shape)}')
            rank_scores = torch.cat([part_scores, sample_scores], dim=1)
            rank_ce = torch.cat([part_ce, sample_ce], dim=1)
        if ranks:
            loss_rank = self.rank_interval * self.loss_rank(rank_scores, rank_ce.detach())
        else:
            loss_rank = part_scores.sum() * 0
        return dict(
            loss_rank=loss_rank,
            loss_overlap=self.loss_overlap(part_boxes),
            loss_area=self.loss_area(part_boxes, object_area.detach()))


def _conv_tower(in_channels: int, feat_channels: int, num_convs: int,
                norm_groups: int = 0) -> nn.Sequential:
    layers = []
    for i in range(num_convs):
        layers.append(nn.Conv2d(in_channels if i == 0 else feat_channels,
                                feat_channels, 3, padding=1))
        if norm_groups > 0:
            layers.append(nn.GroupNorm(norm_groups, feat_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _iou_above(boxes_a: Tensor, areas_a: Tensor, boxes_b: Tensor, areas_b: Tensor,
               iou_thr: float) -> Tensor:
    """Whether IoU(a, b) > ``iou_thr``, decided as torchvision's CPU ``nms``.

    The same float32 operations in the same order (intersection from the
    clamped corner differences, union ``area_a + area_b - inter``) and the
    comparison with the threshold in float64, so that every decision matches
    its bit for bit. A zero-area box has a NaN IoU: never above.

    Args:
        boxes_a (Tensor): (4, ...) float32 x1, y1, x2, y2 of boxes,
            coordinates first.
        areas_a (Tensor): (...) their areas.
        boxes_b (Tensor): (4, ...) float32 boxes, broadcastable with a.
        areas_b (Tensor): (...) their areas.
        iou_thr (float): the NMS threshold.

    Returns:
        Tensor: bool, the broadcast shape of the areas.
    """
    size = (torch.minimum(boxes_a[2:], boxes_b[2:])
            - torch.maximum(boxes_a[:2], boxes_b[:2])).clamp(min=0)  # (2, ...)
    inter = size[0] * size[1]
    return (inter / (areas_a + areas_b - inter)).double() > iou_thr


def _prior_key(featmap_sizes: Sequence[Tuple[int, int]], dtype: torch.dtype,
               device: torch.device) -> Tuple[Tuple[Tuple[int, int], ...], torch.dtype,
                                              torch.device]:
    """Hashable key of a set of anchors: level sizes, dtype, device."""
    sizes = tuple((int(size[0]), int(size[1])) for size in featmap_sizes)
    return sizes, dtype, torch.device(device)


def _in_mmdet(cfg: dict) -> dict:
    """Copy of ``cfg`` that resolves in mmdet's scope unless it names another.

    Without it, building under the default scope 'mmpretrain' would look up
    e.g. ``AnchorGenerator`` in mmpretrain, where it does not exist.
    """
    cfg = copy.deepcopy(dict(cfg))
    cfg.setdefault('_scope_', 'mmdet')
    return cfg
