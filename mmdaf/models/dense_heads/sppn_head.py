"""SPPN: saliency part proposal network (paper Sec. 3.3)."""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmdet.registry import MODELS, TASK_UTILS
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor
from torchvision.ops import batched_nms

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
            content signal (docs/benchmarks.md). Defaults to 0 (the paper).
        inside_image (bool): True keeps only the anchors that lie wholly
            inside the image as candidates (with the object mask, where
            given): a prior that needs no heatmap against proposals on the
            image border, whose part images keep mostly nothing. Defaults to
            False (the paper).
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
                 inside_image: bool = False):
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
        self.num_parts = num_parts
        self.rank_samples = rank_samples
        self.inside_image = inside_image
        self.regress_boxes = regress_boxes
        self.pre_nms_topk = pre_nms_topk
        self.nms_iou_thr = nms_iou_thr

        self.prior_generator = TASK_UTILS.build(_in_mmdet(anchor_generator))
        self.bbox_coder = TASK_UTILS.build(_in_mmdet(bbox_coder))
        anchors_per_level = set(self.prior_generator.num_base_priors)
        if len(anchors_per_level) != 1:
            raise ValueError('anchor_generator must give every level the same '
                             f'number of anchors, got '
                             f'{self.prior_generator.num_base_priors}')
        self.num_anchors = anchors_per_level.pop()

        self.score_tower = _conv_tower(in_channels, feat_channels, stacked_convs)
        tower_channels = feat_channels if stacked_convs > 0 else in_channels
        self.score_conv = nn.Conv2d(tower_channels, self.num_anchors, 3, padding=1)
        if regress_boxes:
            self.reg_tower = _conv_tower(in_channels, feat_channels, stacked_convs)
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
        dense, is_candidate = self._dense_candidates(feats, img_shape, object_mask)
        return self._top_n(dense, is_candidate, img_shape)

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
        dense, is_candidate = self._dense_candidates(feats, img_shape, object_mask)
        boxes, scores = self._top_n(dense, is_candidate, img_shape)
        sample_boxes, sample_scores = self._draw(dense, is_candidate, img_shape,
                                                 self.rank_samples)
        return boxes, scores, sample_boxes, sample_scores

    def _dense_candidates(self, feats: Sequence[Tensor], img_shape: Tuple[int, int],
                          object_mask: Optional[Tensor]
                          ) -> Tuple[Tuple[Tensor, Tensor, Tensor], Tensor]:
        """:meth:`dense_scores` and the (B, M) candidate mask of its anchors."""
        dense = self.dense_scores(feats)
        return dense, self.anchor_candidates(dense[0], img_shape, object_mask,
                                             dense[1].shape[0])

    def _top_n(self, dense: Tuple[Tensor, Tensor, Tensor], is_candidate: Tensor,
               img_shape: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        anchors, scores, deltas = dense
        num_imgs = scores.shape[0]
        num_topk = min(self.pre_nms_topk, anchors.shape[0])
        ranking = scores.detach().masked_fill(~is_candidate, float('-inf'))
        topk_idx = ranking.topk(num_topk, dim=1).indices  # (B, k), by score
        topk_valid = is_candidate.gather(1, topk_idx)
        topk_scores = scores.gather(1, topk_idx)
        topk_boxes = self.bbox_coder.decode(
            anchors[topk_idx].reshape(-1, 4),
            deltas.gather(1, topk_idx[..., None].expand(-1, -1, 4)).reshape(-1, 4),
            max_shape=tuple(img_shape)).reshape(num_imgs, num_topk, 4)

        survived = self._nms_survivors(topk_boxes, topk_scores, topk_valid)
        picked = self._pick_n(survived, topk_valid, topk_scores)
        part_boxes = topk_boxes.gather(1, picked[..., None].expand(-1, -1, 4))
        part_scores = topk_scores.gather(1, picked)
        return part_boxes, part_scores

    def dense_scores(self, feats: Sequence[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """Anchors, scores and deltas of every level, flattened.

        Returns:
            tuple: ``anchors`` (M, 4) xyxy input pixels, ``scores`` (B, M) and
            ``deltas`` (B, M, 4), in mmdet's prior order ((y, x, anchor) per
            level, finest level first).
        """
        scores_per_level, deltas_per_level = self(feats)
        num_imgs = scores_per_level[0].shape[0]
        featmap_sizes = [scores.shape[-2:] for scores in scores_per_level]
        anchors = torch.cat(
            self.prior_generator.grid_priors(
                featmap_sizes, dtype=scores_per_level[0].dtype,
                device=scores_per_level[0].device))
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
        dense, is_candidate = self._dense_candidates(feats, img_shape, object_mask)
        return self._draw(dense, is_candidate, img_shape, num_samples, generator)

    def _draw(self, dense: Tuple[Tensor, Tensor, Tensor], is_candidate: Tensor,
              img_shape: Tuple[int, int], num_samples: int,
              generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        anchors, scores, deltas = dense
        num_imgs = scores.shape[0]
        enough = bool((is_candidate.sum(dim=1) >= num_samples).all())
        picked = torch.multinomial(is_candidate.float(), num_samples,
                                   replacement=not enough, generator=generator)  # (B, K)
        boxes = self.bbox_coder.decode(
            anchors[picked].reshape(-1, 4),
            deltas.gather(1, picked[..., None].expand(-1, -1, 4)).reshape(-1, 4),
            max_shape=tuple(img_shape)).reshape(num_imgs, num_samples, 4)
        return boxes, scores.gather(1, picked)

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
        num_anchors = anchors.shape[0]
        is_candidate = anchors.new_ones((num_imgs, num_anchors), dtype=torch.bool)
        if self.inside_image:
            height, width = img_shape
            inside = ((anchors[:, 0] >= 0) & (anchors[:, 1] >= 0)
                      & (anchors[:, 2] <= width) & (anchors[:, 3] <= height))
            is_candidate = is_candidate & inside
        if object_mask is None:
            return is_candidate | ~is_candidate.any(dim=1, keepdim=True)
        if object_mask.dim() != 4 or object_mask.shape[1] != 1:
            raise ValueError(f'object_mask must be (B, 1, h, w), got '
                             f'{tuple(object_mask.shape)}')
        if object_mask.shape[0] != num_imgs:
            raise ValueError(f'object_mask has batch size {object_mask.shape[0]}, '
                             f'the features have {num_imgs}')
        mask = object_mask[:, 0].bool()
        mask_h, mask_w = mask.shape[-2:]
        centres_x = (anchors[:, 0] + anchors[:, 2]) / 2
        centres_y = (anchors[:, 1] + anchors[:, 3]) / 2
        cols = (centres_x * mask_w / img_shape[1]).floor().long().clamp(0, mask_w - 1)
        rows = (centres_y * mask_h / img_shape[0]).floor().long().clamp(0, mask_h - 1)
        is_candidate = is_candidate & mask[:, rows, cols]  # (B, M)
        keeps_none = ~is_candidate.any(dim=1, keepdim=True)
        return is_candidate | keeps_none

    def _nms_survivors(self, boxes: Tensor, scores: Tensor, valid: Tensor) -> Tensor:
        """(B, k) bool: valid candidates kept by NMS, one batched call."""
        num_imgs, num_topk = scores.shape
        img_idx = torch.arange(num_imgs, device=scores.device)[:, None]
        img_idx = img_idx.expand(num_imgs, num_topk)
        valid_pos = valid.reshape(-1).nonzero().squeeze(1)
        kept = batched_nms(boxes.detach().reshape(-1, 4)[valid_pos].float(),
                           scores.detach().reshape(-1)[valid_pos].float(),
                           img_idx.reshape(-1)[valid_pos], self.nms_iou_thr)
        survived = torch.zeros(num_imgs * num_topk, dtype=torch.bool,
                               device=scores.device)
        survived[valid_pos[kept]] = True
        return survived.view(num_imgs, num_topk)

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

    def loss(self, part_boxes: Tensor, part_scores: Tensor, part_ce: Tensor,
             object_area: Tensor, sample_scores: Optional[Tensor] = None,
             sample_ce: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """SPPN losses from the part images' evaluation.

        Args:
            part_boxes (Tensor): (B, N, 4) boxes from :meth:`propose`.
            part_scores (Tensor): (B, N) scores from :meth:`propose`.
            part_ce (Tensor): (B, N) ground-truth-class cross entropy of each
                part image; detached here (a target, not a path into the
                backbone).
            object_area (Tensor): (B,) object area S in input pixels; detached.
            sample_scores (Tensor, optional): (B, K) scores of the sampled
                anchors (:meth:`sample_anchors`), ranked together with the N
                proposals; their boxes take no part in R_IOU and R_area.
            sample_ce (Tensor, optional): (B, K) their part images' cross
                entropies; given exactly when ``sample_scores`` is.

        Returns:
            dict: ``loss_rank``, ``loss_overlap``, ``loss_area`` scalars.
        """
        if part_boxes.dim() != 3 or part_boxes.shape[-1] != 4:
            raise ValueError(
                f'part_boxes must be (B, N, 4), got {tuple(part_boxes.shape)}')
        if part_scores.shape != part_boxes.shape[:2]:
            raise ValueError(f'part_scores must be (B, N) = '
                             f'{tuple(part_boxes.shape[:2])}, got '
                             f'{tuple(part_scores.shape)}')
        if part_ce.shape != part_scores.shape:
            raise ValueError(f'part_ce must be (B, N) = {tuple(part_scores.shape)}, '
                             f'got {tuple(part_ce.shape)}')
        rank_scores, rank_ce = part_scores, part_ce
        if (sample_scores is None) != (sample_ce is None):
            raise ValueError('sample_scores and sample_ce must be given together')
        if sample_scores is not None:
            if sample_scores.shape[0] != part_scores.shape[0] or \
                    sample_ce.shape != sample_scores.shape:
                raise ValueError(f'sample_scores and sample_ce must both be (B, K) '
                                 f'with B = {part_scores.shape[0]}, got '
                                 f'{tuple(sample_scores.shape)} and '
                                 f'{tuple(sample_ce.shape)}')
            rank_scores = torch.cat([part_scores, sample_scores], dim=1)
            rank_ce = torch.cat([part_ce, sample_ce], dim=1)
        return dict(
            loss_rank=self.loss_rank(rank_scores, rank_ce.detach()),
            loss_overlap=self.loss_overlap(part_boxes),
            loss_area=self.loss_area(part_boxes, object_area.detach()))


def _conv_tower(in_channels: int, feat_channels: int, num_convs: int) -> nn.Sequential:
    layers = []
    for i in range(num_convs):
        layers += [
            nn.Conv2d(in_channels if i == 0 else feat_channels, feat_channels, 3,
                      padding=1),
            nn.ReLU(inplace=True)
        ]
    return nn.Sequential(*layers)


def _in_mmdet(cfg: dict) -> dict:
    """Copy of ``cfg`` that resolves in mmdet's scope unless it names another.

    Without it, building under the default scope 'mmpretrain' would look up
    e.g. ``AnchorGenerator`` in mmpretrain, where it does not exist.
    """
    cfg = copy.deepcopy(dict(cfg))
    cfg.setdefault('_scope_', 'mmdet')
    return cfg
