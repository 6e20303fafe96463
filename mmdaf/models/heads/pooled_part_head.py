"""The student's pooled part cross entropy: its head on the last stage
averaged inside part boxes."""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from ..utils.box_pooling import box_pooled_features, mask_pooled_features
from ..utils.gt_part_boxes import ground_truth_part_boxes

POOL_BOXES = ('proposals', 'random', 'ground_truth', 'object')


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


@MODELS.register_module()
class PooledPartHead(nn.Module):
    """Classify the student's last stage pooled in part regions.

    The student head (passed in, not owned: it is the image classifier's)
    classifies the last stage averaged inside each box (cells weighted by
    their overlap, :func:`box_pooled_features`); ``loss_part_pool`` is a
    cross entropy per box into the backbone, none into the boxes. With
    ``predict`` the student's prediction averages these logits with the
    image's, in training (what the fusion head is trained on) and testing.

    Args:
        top_m (int): M, the best proposals pooled (``boxes='proposals'`` or
            ``'random'``). Defaults to 3.
        loss_weight (float): weight of the pooled cross entropy. Defaults to 1.
        predict (bool): average the pooled logits into the student's
            prediction. Defaults to True.
        boxes (str): the box source. ``'proposals'``: the SPPN's top M.
            ``'random'``: the same boxes moved to random positions (sizes
            kept), the control for whether their positions matter.
            ``'ground_truth'``: every true part region the data samples carry
            (``gt_bboxes``), the oracle control. ``'object'``: one region, the
            location heatmap's object mask. Defaults to ``'proposals'``.
        samples (bool): also train the pooled cross entropy at the SPPN's
            sampled anchors on the steps that draw them
            (``loss_part_pool_samples``): the student learns to classify
            every region of the object, not only where its pooled boxes lie.
            Needs an SPPN with ``rank_samples > 0``. Defaults to False.
    """

    def __init__(self, top_m: int = 3, loss_weight: float = 1.0, predict: bool = True,
                 boxes: str = 'proposals', samples: bool = False) -> None:
        super().__init__()
        if boxes not in POOL_BOXES:
            raise ValueError(f'PooledPartHead: boxes must be one of {POOL_BOXES}, '
                             f'got {boxes!r}')
        if top_m < 1:
            raise ValueError(f'PooledPartHead: top_m must be >= 1, got {top_m}')
        self.top_m = int(top_m)
        self.loss_weight = float(loss_weight)
        self.predict = bool(predict)
        self.boxes = boxes
        self.samples = bool(samples)

    @property
    def needs_proposals(self) -> bool:
        """Whether the box source is the SPPN (or sampled anchors)."""
        return self.boxes in ('proposals', 'random') or self.samples

    @property
    def needs_object_mask(self) -> bool:
        """Whether the box source is the location heatmap's object mask."""
        return self.boxes == 'object'

    def check_sources(self, with_sppn: bool, with_heatmap: bool,
                      rank_samples: int) -> None:
        """Raise a ValueError when the model lacks what the box source reads.

        Args:
            with_sppn (bool): whether the model has an SPPN.
            with_heatmap (bool): whether it has a location heatmap.
            rank_samples (int): the SPPN's sampled anchors per image.
        """
        if self.needs_proposals and not with_sppn:
            raise ValueError(f'DAFClassifier: part_pool boxes={self.boxes!r} '
                             f'(samples={self.samples}) needs the SPPN (sppn_head=None)')
        if self.needs_object_mask and not with_heatmap:
            raise ValueError("DAFClassifier: part_pool boxes='object' pools over the "
                             "location heatmap's object mask; location_heatmap is None")
        if self.samples and rank_samples == 0:
            raise ValueError('DAFClassifier: part_pool.samples trains the pooled cross '
                             "entropy at the SPPN's sampled anchors; set "
                             'sppn_head.rank_samples > 0, got 0')

    def forward(self, cls_head: nn.Module, feat: Tensor, img_shape: Tuple[int, int],
                proposals: Optional[Tensor] = None,
                object_mask: Optional[Tensor] = None,
                data_samples: Optional[List[DataSample]] = None) -> Tensor:
        """The pooled logits of the box source.

        Args:
            cls_head (nn.Module): the student head, called on ``((B', C), )``.
            feat (Tensor): (B, C, h, w) the student's last stage.
            img_shape (tuple): (H, W) of the input.
            proposals (Tensor, optional): (B, N, 4) the SPPN's proposals, best
                first (``'proposals'``, ``'random'``).
            object_mask (Tensor, optional): (B, 1, h', w') bool (``'object'``).
            data_samples (list[DataSample], optional): with ``gt_bboxes``
                (``'ground_truth'``).

        Returns:
            Tensor: (B, M, K) logits: M = top M proposals, P true parts, or 1.
        """
        if self.boxes == 'object':
            if object_mask is None:
                raise ValueError("PooledPartHead(boxes='object') needs the location "
                                 "heatmap's object mask (location_heatmap=None)")
            pooled = mask_pooled_features(feat, object_mask.detach())
            return cls_head((pooled, ))[:, None]
        if self.boxes == 'ground_truth':
            boxes = ground_truth_part_boxes(data_samples, feat.device, feat.dtype)
            return self.box_logits(cls_head, feat, boxes, img_shape)
        if proposals is None:
            raise ValueError(f'PooledPartHead(boxes={self.boxes!r}) needs the SPPN '
                             'proposals (sppn_head=None)')
        boxes = proposals[:, :min(self.top_m, proposals.shape[1])].detach()
        if self.boxes == 'random':
            generator = None
            if not self.training:
                # The same draw in every evaluation.
                generator = torch.Generator(device=boxes.device).manual_seed(0)
            boxes = move_boxes_at_random(boxes, img_shape, generator)
        return self.box_logits(cls_head, feat, boxes, img_shape)

    @staticmethod
    def box_logits(cls_head: nn.Module, feat: Tensor, boxes: Tensor,
                   img_shape: Tuple[int, int]) -> Tensor:
        """(B, M, K) logits of ``cls_head`` on ``feat`` (B, C, h, w) averaged
        inside each of the (B, M, 4) xyxy boxes."""
        pooled = box_pooled_features(feat, boxes, img_shape)
        return cls_head((pooled.flatten(0, 1), )).view(*boxes.shape[:2], -1)

    def loss(self, pooled_logits: Tensor, labels: Tensor, cls_head: nn.Module,
             feat: Tensor, img_shape: Tuple[int, int],
             sample_boxes: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """The pooled cross entropies, weighted by ``loss_weight``.

        Args:
            pooled_logits (Tensor): (B, M, K) from :meth:`forward`.
            labels (Tensor): (B, ) ground-truth classes.
            cls_head (nn.Module): the student head.
            feat (Tensor): (B, C, h, w) the student's last stage.
            img_shape (tuple): (H, W) of the input.
            sample_boxes (Tensor, optional): (B, K, 4) sampled anchors of this
                step; pooled and trained with ``samples``.

        Returns:
            dict: ``loss_part_pool`` and, with samples, ``loss_part_pool_samples``.
        """
        losses = dict(loss_part_pool=self.loss_weight * _mean_box_ce(pooled_logits,
                                                                     labels))
        if self.samples and sample_boxes is not None:
            sample_logits = self.box_logits(cls_head, feat, sample_boxes.detach(),
                                            img_shape)
            losses['loss_part_pool_samples'] = self.loss_weight * _mean_box_ce(
                sample_logits, labels)
        return losses


def _mean_box_ce(box_logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross entropy of (B, M, K) box logits against each image's label."""
    return F.cross_entropy(box_logits.flatten(0, 1).float(),
                           labels.repeat_interleave(box_logits.shape[1]))
