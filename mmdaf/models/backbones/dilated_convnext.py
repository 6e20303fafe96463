"""ConvNeXt whose later stages can keep the resolution (stride 1, dilation),
as mmpretrain's ResNet does with ``strides`` and ``dilations``.

The synthetic configs use 64 px images. A stride-32 last stage is then 2x2,
too coarse for the teacher's part attention filter and bilinear pooling (they
see 14x14 on CUB at 448 px); the ResNet-18 configs therefore run their last
stage at stride 16 with dilation 2, on the same weights. This backbone gives
ConvNeXt the same option.
"""
from typing import Sequence

import torch.nn as nn
from mmpretrain.models.backbones import ConvNeXt
from mmpretrain.registry import MODELS


def same_size_conv(conv: nn.Conv2d, dilation: int = 1) -> nn.Conv2d:
    """A stride-1 convolution with the parameters (the same objects) of
    ``conv``, dilated by ``dilation``, that keeps the input size.

    The padding is ``'same'``: for an even kernel (ConvNeXt's kernel-2
    downsampling) torch pads the extra row and column at the bottom and right.
    """
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=1,
                    padding='same', dilation=dilation, groups=conv.groups,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode,
                    device='meta')
    new.weight = conv.weight
    new.bias = conv.bias
    return new


@MODELS.register_module()
class DilatedConvNeXt(ConvNeXt):
    """mmpretrain ``ConvNeXt`` with per-stage downsample strides and
    depthwise-convolution dilations.

    Same modules, parameters and state-dict keys as ``ConvNeXt`` (so its
    checkpoints load either way); only the geometry of two kinds of
    convolutions changes:

    - ``downsample_strides[i - 1]`` is the stride of the kernel-2 convolution
      that starts stage ``i`` (1..3): 2 (ConvNeXt) halves the resolution, 1
      keeps it (``'same'`` padding: one zero row and column at the bottom and
      right);
    - ``dilations[i]`` dilates the 7x7 depthwise convolutions of stage ``i``
      (padding ``3 * dilation``, so the size is kept).

    ``downsample_strides=(2, 2, 1), dilations=(1, 1, 1, 2)`` is the ResNet
    trick for ConvNeXt: the last stage at stride 16 instead of 32, and its
    depthwise kernels' taps 2 x 16 = 32 input pixels apart, as at stride 32,
    so weights learnt at stride 32 see the same pixel offsets.

    Args:
        downsample_strides (Sequence[int]): strides of the downsample layers
            of stages 1, 2, 3, each 1 or 2. Defaults to (2, 2, 2).
        dilations (Sequence[int]): dilation of each stage's depthwise
            convolutions, each >= 1. Defaults to (1, 1, 1, 1).
        **kwargs: ``ConvNeXt`` arguments (arch, out_indices,
            gap_before_final_norm, with_cp, init_cfg...).
    """

    def __init__(self, downsample_strides: Sequence[int] = (2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1), **kwargs) -> None:
        super().__init__(**kwargs)
        if len(downsample_strides) != self.num_stages - 1 or \
                any(stride not in (1, 2) for stride in downsample_strides):
            raise ValueError(f'DilatedConvNeXt: downsample_strides must be '
                             f'{self.num_stages - 1} values of 1 or 2, got '
                             f'{tuple(downsample_strides)}')
        if len(dilations) != self.num_stages or any(d < 1 for d in dilations):
            raise ValueError(f'DilatedConvNeXt: dilations must be {self.num_stages} '
                             f'values >= 1, got {tuple(dilations)}')
        self.downsample_strides = tuple(downsample_strides)
        self.dilations = tuple(dilations)
        for stage_index, stride in enumerate(downsample_strides, start=1):
            if stride == 1:
                downsample = self.downsample_layers[stage_index]  # (LN, conv)
                downsample[1] = same_size_conv(downsample[1])
        for stage, dilation in zip(self.stages, dilations):
            if dilation > 1:
                for block in stage:
                    block.depthwise_conv = same_size_conv(block.depthwise_conv, dilation)
