"""The finest backbone stage alone, mapped to a head's width."""
from typing import Sequence, Tuple

from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

# mmdet ChannelMapper's initialisation.
DEFAULT_INIT_CFG = dict(type='Xavier', layer='Conv2d', distribution='uniform')


@MODELS.register_module()
class FinestStageMapper(BaseModule):
    """A 1x1 conv + ReLU on the finest stage; the coarser stages are not read.

    The neck for a head that should see local features: an FPN's top-down
    path adds the coarse stages, whose cells see the whole object, into every
    fine cell, so that every cell carries the class and a head that pools
    cells by class finds no reason to pick one part over another.

    Args:
        in_channels (int): channels of the finest stage (e.g. 512 for
            ResNet-50's C3).
        out_channels (int): channels of the output.
        init_cfg (dict, optional): defaults to mmdet ChannelMapper's
            Xavier-uniform init.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 init_cfg: dict = DEFAULT_INIT_CFG) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tuple[Tensor]:
        """(C3, ...) finest first -> one (B, out_channels, H_0, W_0) map."""
        if feats[0].shape[1] != self.in_channels:
            raise ValueError(f'FinestStageMapper: the finest stage has '
                             f'{feats[0].shape[1]} channels, in_channels is '
                             f'{self.in_channels}')
        return (self.conv(feats[0]), )
