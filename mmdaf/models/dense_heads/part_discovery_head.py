"""Part discovery: a proposal head that finds several distinct parts without
part labels (after PDiscoNet, ICCV 2023)."""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from ..losses.part_priors import (
    concentration_loss,
    orthogonality_loss,
    part_centroids,
    presence_loss,
)
from ..utils.conv_tower import conv_tower

DEFAULT_LOSS_WEIGHTS = dict(cls=1.0, concentration=5.0, orthogonality=1.0, presence=1.0)


class PartMaps(NamedTuple):
    """One pass of the part discovery head.

    Attributes:
        maps: (B, P + 1, h, w) soft assignment of each cell to the P parts and
            the background (last); sums to one over channels.
        features: (B, P, D) the tower's features averaged in each part map.
    """
    maps: Tensor
    features: Tensor


@MODELS.register_module()
class PartDiscoveryHead(BaseModule):
    """Proposes one box per discovered part, learnt from the class labels.

    On the finest FPN level: a conv tower, then a 1x1 conv to P + 1 channels
    and a softmax over them, which assigns each cell to one of P parts or the
    background. Each part's features (the tower's, averaged in its map) are
    concatenated and classified; the class loss makes the parts
    discriminative, and four priors make them several and distinct:
    concentration (compact maps), orthogonality (different features),
    presence (each part in some image, the background in every one) and part
    dropout (no single part carries the class).

    The proposals are squares of side ``box_size`` centred on each part map's
    centre of mass, ordered by the part's largest cell value. The SPPN's
    interface, so that ``DAFClassifier`` takes it as its ``sppn_head``: it
    ranks nothing and samples nothing; its loss reads the labels
    (:meth:`loss_by_labels`).

    Args:
        in_channels (int): channels of the FPN level.
        num_classes (int): classes of the part classifier.
        num_parts (int): P, the parts and boxes per image. Defaults to 4.
        feat_channels (int): channels of the tower. Defaults to 64.
        stacked_convs (int): 1x1 convs in the tower. Defaults to 2.
        tower_norm_groups (int): GroupNorm groups after each tower conv (0:
            none). Defaults to 8.
        box_size (float): side of each proposal in input pixels. Defaults to
            14 (the synthetic set's parts at 64 px).
        part_dropout (float): probability that a part's features are dropped
            from the classifier's input in training. Defaults to 0.3.
        loss_weights (dict, optional): weights of ``cls``,
            ``concentration``, ``orthogonality`` and ``presence``; missing
            keys keep ``DEFAULT_LOSS_WEIGHTS``.
        init_cfg (dict, optional): initialisation config.
    """

    # DAFClassifier calls loss_by_labels instead of ranking the proposals.
    learns_from_labels = True
    # The SPPN's sampling interface: this head ranks and samples nothing.
    rank_samples = 0
    rank_interval = 1

    def __init__(self,
                 in_channels: int,
                 num_classes: int,
                 num_parts: int = 4,
                 feat_channels: int = 64,
                 stacked_convs: int = 2,
                 tower_norm_groups: int = 8,
                 box_size: float = 14.0,
                 part_dropout: float = 0.3,
                 loss_weights: Optional[Dict[str, float]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_parts < 1:
            raise ValueError(f'PartDiscoveryHead: num_parts must be >= 1, got {num_parts}')
        if stacked_convs < 1:
            raise ValueError('PartDiscoveryHead: stacked_convs must be >= 1, got '
                             f'{stacked_convs}')
        if box_size <= 0:
            raise ValueError(f'PartDiscoveryHead: box_size must be > 0, got {box_size}')
        if not 0 <= part_dropout < 1:
            raise ValueError('PartDiscoveryHead: part_dropout must be in [0, 1), got '
                             f'{part_dropout}')
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f'PartDiscoveryHead: unknown loss_weights keys '
                             f'{sorted(unknown)}; expected some of '
                             f'{sorted(DEFAULT_LOSS_WEIGHTS)}')
        self.num_parts = num_parts
        self.num_classes = num_classes
        self.box_size = float(box_size)
        self.part_dropout = part_dropout
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        # 1x1 convs: a cell's part assignment reads that cell alone. With
        # 3x3 convs the zero padding told the maps where the border was, and
        # they learnt fixed image positions (0.94 parts covered against 1.59).
        self.tower = conv_tower(in_channels, feat_channels, stacked_convs,
                                tower_norm_groups, kernel_size=1)
        self.part_logits = nn.Conv2d(feat_channels, num_parts + 1, 1)
        self.classifier = nn.Linear(num_parts * feat_channels, num_classes)

    # ------------------------------------------------ the SPPN's interface
    def samples_this_step(self) -> bool:
        return False

    def ranks(self, with_samples: bool) -> bool:
        return False

    # ------------------------------------------------------------ forward
    def forward(self, feats: Sequence[Tensor]) -> PartMaps:
        """FPN levels (finest first) -> :class:`PartMaps` on the finest."""
        features = self.tower(feats[0])
        maps = self.part_logits(features).softmax(dim=1)
        parts = maps[:, :-1]
        mass = parts.sum(dim=(2, 3)) + 1e-6  # (B, P)
        pooled = torch.einsum('bphw,bdhw->bpd', parts, features) / mass[..., None]
        return PartMaps(maps, pooled)

    def propose(self, feats: Sequence[Tensor], img_shape: Tuple[int, int],
                object_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """(B, P, 4) part boxes (xyxy input pixels) and (B, P) scores, best
        first. ``object_mask`` is not read: the background channel plays
        its part."""
        return self.boxes_from_maps(self(feats).maps, img_shape)

    def boxes_from_maps(self, maps: Tensor,
                        img_shape: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """(B, P + 1, h, w) maps -> (B, P, 4) boxes and (B, P) scores, the
        boxes ordered by score (each part's largest cell value), highest
        first."""
        height, width = img_shape
        parts = maps[:, :-1]
        centre = part_centroids(parts)  # (B, P, 2) row, col in [0, 1]
        centre_y = centre[..., 0] * height
        centre_x = centre[..., 1] * width
        half = self.box_size / 2
        boxes = torch.stack([
            (centre_x - half).clamp(0, width), (centre_y - half).clamp(0, height),
            (centre_x + half).clamp(0, width), (centre_y + half).clamp(0, height)
        ], dim=-1)
        scores = parts.flatten(2).amax(dim=2)
        order = scores.argsort(dim=1, descending=True)
        boxes = boxes.gather(1, order[..., None].expand(-1, -1, 4))
        return boxes, scores.gather(1, order)

    def predict(self, feats: Sequence[Tensor],
                batch_img_metas: List[dict]) -> List[InstanceData]:
        """Part boxes per image in mmdet's result form (detached), proposed on
        the batch input shape (``batch_input_shape`` of the first meta, else
        its ``img_shape``)."""
        first_meta = batch_img_metas[0]
        input_shape = first_meta.get('batch_input_shape', first_meta['img_shape'])
        boxes, scores = self.propose(feats, tuple(input_shape[:2]))
        return [InstanceData(bboxes=b, scores=s)
                for b, s in zip(boxes.detach(), scores.detach())]

    # ------------------------------------------------------------ losses
    def classify_parts(self, part_features: Tensor) -> Tensor:
        """(B, P, D) part features -> (B, K) logits; in training each part
        of each image is dropped with probability ``part_dropout``."""
        if self.training and self.part_dropout > 0:
            keep = torch.rand(part_features.shape[:2], device=part_features.device,
                              dtype=part_features.dtype) >= self.part_dropout
            part_features = part_features * keep[..., None] / (1 - self.part_dropout)
        return self.classifier(part_features.flatten(1))

    def loss_by_labels(self, feats: Sequence[Tensor], labels: Tensor) -> Dict[str, Tensor]:
        """The part classifier's cross entropy and the priors, weighted.

        Args:
            feats (Sequence[Tensor]): FPN levels, finest first.
            labels (Tensor): (B,) class indices.

        Returns:
            dict: ``loss_part_cls``, ``loss_concentration``,
            ``loss_orthogonality``, ``loss_presence`` and the part
            classifier's top-1 ``part_cls_accuracy`` (%, not a loss).
        """
        part_maps = self(feats)
        logits = self.classify_parts(part_maps.features)
        weights = self.loss_weights
        accuracy = (logits.argmax(dim=1) == labels).float().mean() * 100
        return dict(
            loss_part_cls=weights['cls'] * F.cross_entropy(logits, labels),
            loss_concentration=weights['concentration'] *
            concentration_loss(part_maps.maps),
            loss_orthogonality=weights['orthogonality'] *
            orthogonality_loss(part_maps.features),
            loss_presence=weights['presence'] *
            presence_loss(part_maps.maps),

            part_cls_accuracy=accuracy.detach())
