"""The teacher net of DAF-net and its input builder (paper Sec. 3.4)."""
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from ..utils.gt_part_boxes import ground_truth_part_boxes
from ..utils.part_images import boxes_to_saliency_mask
from ..utils.stage_features import check_stage_features

MASK_BOXES = ('proposals', 'ground_truth')


class TeacherOutput(NamedTuple):
    """Teacher pass: backbone stages, (B, K) logits, the neck's grouping loss."""
    feats: Tuple[Tensor, ...]
    logits: Tensor
    grouping_loss: Optional[Tensor]


@MODELS.register_module()
class DAFTeacher(BaseModule):
    """The teacher: a backbone on the 5-channel input (image, location
    heatmap, box saliency mask), a neck that takes the saliency mask
    (``PAFBilinearNeck``, its part attention filter) and a classification head.

    Args:
        backbone (dict): e.g. ``ExpandedInputResNet`` with ``in_channels=5`` and
            ``out_indices=(2, 3)`` (C4 for the hint, C5 for the neck).
        neck (dict): a neck called as ``neck(feats, saliency_mask=...,
            return_grouping_loss=...)``.
        head (dict): an mmpretrain ``ClsHead`` on the neck's output.
        attention (bool): False gives the teacher the image only: its heatmap
            and saliency channels are zeros and its neck gets no mask (build
            the neck with ``use_attention=False``): the control for whether
            the dual attention matters. Defaults to True.
        mask_boxes (str): the boxes whose union is the saliency mask:
            ``'proposals'`` (the paper) or ``'ground_truth'``, every true part
            region the data samples carry (``gt_bboxes``): the oracle control.
            Defaults to ``'proposals'``.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self, backbone: dict, neck: dict, head: dict, attention: bool = True,
                 mask_boxes: str = 'proposals', init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck)
        self.head = MODELS.build(head)
        if not attention and getattr(self.neck, 'use_attention', False):
            raise ValueError('DAFTeacher: attention=False gives the neck no saliency '
                             'mask; set neck.use_attention=False as well (an unused '
                             'attention filter gets no gradient, which DDP refuses)')
        if mask_boxes not in MASK_BOXES:
            raise ValueError(f'DAFTeacher: mask_boxes must be one of {MASK_BOXES}, '
                             f'got {mask_boxes!r}')
        if mask_boxes == 'ground_truth' and not attention:
            raise ValueError("DAFTeacher: mask_boxes='ground_truth' needs attention=True")
        self.attention = attention
        self.mask_boxes = mask_boxes

    def build_input(self, inputs: Tensor, heatmap: Optional[Tensor],
                    part_boxes: Optional[Tensor],
                    data_samples: Optional[List[DataSample]] = None
                    ) -> Tuple[Tensor, Optional[Tensor]]:
        """The teacher's 5-channel input and its saliency mask.

        Channel 4 is the location heatmap upsampled to the input (all ones
        without one); channel 5 the union of the part boxes (all ones without
        boxes), or of the true part regions with ``mask_boxes='ground_truth'``.
        Without ``attention`` both are zeros and the mask is None.

        Args:
            inputs (Tensor): (B, 3, H, W) images.
            heatmap (Tensor, optional): (B, 1, h, w) location heatmap.
            part_boxes (Tensor, optional): (B, N, 4) the SPPN's proposals.
            data_samples (list[DataSample], optional): read with
                ``mask_boxes='ground_truth'`` only.

        Returns:
            tuple: (B, 5, H, W) teacher input, (B, 1, H, W) saliency mask or None.
        """
        batch_size, _, height, width = inputs.shape
        if not self.attention:
            no_attention = inputs.new_zeros((batch_size, 2, height, width))
            return torch.cat([inputs, no_attention], dim=1), None
        if heatmap is not None:
            heatmap = F.interpolate(heatmap.detach().to(inputs.dtype),
                                    size=(height, width), mode='bilinear',
                                    align_corners=False)
        else:
            heatmap = inputs.new_ones((batch_size, 1, height, width))
        if self.mask_boxes == 'ground_truth':
            part_boxes = ground_truth_part_boxes(data_samples, inputs.device, inputs.dtype)
        if part_boxes is not None:
            saliency = boxes_to_saliency_mask(part_boxes.detach(),
                                              (height, width)).to(inputs.dtype)
        else:
            saliency = inputs.new_ones((batch_size, 1, height, width))
        return torch.cat([inputs, heatmap, saliency], dim=1), saliency

    def forward(self, teacher_input: Tensor, saliency_mask: Optional[Tensor],
                with_grouping_loss: bool = True) -> TeacherOutput:
        """Teacher logits from the 5-channel input.

        Args:
            teacher_input (Tensor): (B, 5, H, W), from :meth:`build_input`.
            saliency_mask (Tensor, optional): (B, 1, H, W) box mask for the
                neck's part attention.
            with_grouping_loss (bool): also compute the neck's grouping loss;
                prediction, which never reads it, passes False (it costs about
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

    def loss(self, teacher_input: Tensor, saliency_mask: Optional[Tensor],
             data_samples: List[DataSample]) -> Tuple[TeacherOutput, Dict[str, Tensor]]:
        """The teacher pass and its losses, unweighted.

        Returns:
            tuple: the :class:`TeacherOutput` and a dict with ``loss_teacher``
            (the head's loss), the head's other entries prefixed ``teacher_``
            and ``loss_group`` (the neck's grouping loss, when it has one).
        """
        output = self(teacher_input, saliency_mask)
        head_losses = self.head._get_loss(output.logits, data_samples)
        losses = dict(loss_teacher=head_losses.pop('loss'))
        losses.update({f'teacher_{k}': v for k, v in head_losses.items()})
        if output.grouping_loss is not None:
            losses['loss_group'] = output.grouping_loss
        return output, losses
