"""An FPN that returns only its finest level (P3 of C3-C5)."""
from typing import List, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

# mmdet FPN's initialisation.
DEFAULT_INIT_CFG = dict(type='Xavier', layer='Conv2d', distribution='uniform')


@MODELS.register_module()
class FinestLevelFPN(BaseModule):
    """FPN top-down path with one output: the finest level.

    The same computation as mmdet's ``FPN`` for its first output: a 1x1 lateral
    conv per input level, coarser laterals upsampled (nearest) and added into
    finer ones from the top down, then one 3x3 conv on the finest sum. The
    coarser levels' 3x3 output convs are not built: a head that reads only the
    finest level (e.g. an SPPN with part-sized anchors on the stride-8 grid)
    would leave them without gradient, which DDP refuses unless
    ``find_unused_parameters=True``.

    Args:
        in_channels (Sequence[int]): channels of each input level, finest
            first, e.g. ``[512, 1024, 2048]`` for ResNet-50 C3-C5.
        out_channels (int): channels of the output.
        init_cfg (dict, optional): defaults to mmdet FPN's Xavier-uniform init.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int,
                 init_cfg: dict = DEFAULT_INIT_CFG):
        super().__init__(init_cfg=init_cfg)
        if len(in_channels) < 1:
            raise ValueError('FinestLevelFPN: in_channels must list at least one level')
        self.in_channels = list(in_channels)
        self.lateral_convs = nn.ModuleList(
            ConvModule(channels, out_channels, 1, act_cfg=None) for channels in in_channels)
        self.output_conv = ConvModule(out_channels, out_channels, 3, padding=1,
                                      act_cfg=None)

    def forward(self, feats: Sequence[Tensor]) -> Tuple[Tensor]:
        """Finest-level FPN output.

        Args:
            feats (Sequence[Tensor]): one (B, in_channels[i], H_i, W_i) map per
                level, finest first.

        Returns:
            tuple[Tensor]: one (B, out_channels, H_0, W_0) map.
        """
        if len(feats) != len(self.in_channels):
            raise ValueError(f'FinestLevelFPN expects {len(self.in_channels)} levels '
                             f'(in_channels={self.in_channels}), got {len(feats)}')
        laterals: List[Tensor] = [conv(feat) for conv, feat in zip(self.lateral_convs, feats)]
        merged = laterals[-1]
        for lateral in reversed(laterals[:-1]):
            # Nearest resizing to the same size (a stride-16 C5 beside C4) is
            # the identity; skipping it saves a slow copy on CPU.
            if merged.shape[-2:] != lateral.shape[-2:]:
                merged = F.interpolate(merged, size=lateral.shape[-2:], mode='nearest')
            merged = lateral + merged
        return (self.output_conv(merged), )
