"""Any mmpretrain backbone with more than 3 input channels that loads
3-channel weights: DAF-net's teacher on ConvNeXt, Swin, ResNet...

The teacher reads (B, 5, H, W): the image, the location heatmap and the part
saliency mask. :class:`ExpandedInputBackbone` builds the wrapped backbone as
usual (3 channels), replaces its input convolution by a wider one, and loads
ImageNet checkpoints with the extra input channels set to zero, so that at the
start of training the teacher is exactly the pretrained RGB network.
:class:`ExpandedInputResNet` is the same for a ResNet built with 5 channels;
both use the functions of :mod:`mmdaf.models.utils.input_conv`.
"""
from typing import List, Sequence, Union

from mmpretrain.registry import MODELS

from ..utils.input_conv import (
    load_expanded_state_dict,
    load_pretrained_state_dict,
    split_init_cfg,
    widen_input_conv,
)
from .non_reentrant_cp_backbone import NonReentrantCPBackbone, merge_init_cfg


@MODELS.register_module()
class ExpandedInputBackbone(NonReentrantCPBackbone):
    """Wraps any mmpretrain backbone and gives it ``in_channels`` inputs.

    After building the wrapped backbone with its 3 input channels, its input
    convolution (:func:`~mmdaf.models.utils.input_conv.find_input_conv`:
    ResNet ``conv1`` or ``stem.0.conv``, ConvNeXt ``downsample_layers.0.0``,
    Swin/ViT ``patch_embed.projection``, else the first ``nn.Conv2d`` with 3
    inputs) is replaced by a copy with ``in_channels`` inputs.

    A ``Pretrained`` init_cfg (given here or in ``backbone``) is taken away
    from the wrapped backbone, whose own loading would fail on the input
    convolution's shape, and applied by :meth:`init_weights` after the wrapped
    backbone's other inits: the checkpoint's 3-channel weight is widened with
    zeros (channels 0-2 from the checkpoint, 3.. zero) and the key and both
    shapes are logged; the rest loads with ``strict=False``, missing and
    unexpected keys logged.

    State-dict keys are those of :class:`NonReentrantCPBackbone`: the wrapped
    backbone's under ``backbone.``, the checkpoint being loaded into the
    wrapped backbone directly (so ``prefix='backbone'`` of an mmpretrain
    classifier checkpoint works unchanged). ``with_cp`` of the wrapped
    backbone is non-reentrant, as in :class:`NonReentrantCPBackbone`.

    Args:
        backbone (dict): the wrapped backbone, built with 3 input channels,
            e.g. ``dict(type='ConvNeXt', arch='tiny', out_indices=(2, 3),
            gap_before_final_norm=False)``.
        in_channels (int): input channels, at least 3. Defaults to 5 (RGB +
            location heatmap + part saliency mask).
        frozen_modules (Sequence[str]): sub-modules of the wrapped backbone
            to freeze, see :class:`NonReentrantCPBackbone`. Defaults to ().
        init_cfg (dict | list, optional): init of the wrapped backbone, e.g.
            ``dict(type='Pretrained', checkpoint=..., prefix='backbone')``.
            Defaults to None.
    """

    def __init__(self, backbone: dict, in_channels: int = 5,
                 frozen_modules: Sequence[str] = (),
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        backbone = merge_init_cfg(backbone, init_cfg)
        backbone_type = backbone.get('type')
        if backbone.get('in_channels', 3) != 3:
            raise ValueError(
                f'ExpandedInputBackbone: build the wrapped {backbone_type} with 3 '
                f"input channels (got in_channels={backbone['in_channels']}) and "
                'set in_channels on ExpandedInputBackbone')
        if in_channels < 3:
            raise ValueError(f'ExpandedInputBackbone: in_channels must be at least 3, '
                             f'got {in_channels}')
        pretrained_cfg, other_cfgs = split_init_cfg(backbone.pop('init_cfg', None))
        if other_cfgs:
            backbone['init_cfg'] = other_cfgs
        # Without init_cfg the wrapped backbone keeps its class's default init.
        super().__init__(backbone=backbone, frozen_modules=frozen_modules)
        self.in_channels = in_channels
        self.pretrained_cfg = pretrained_cfg
        try:
            self.input_conv_name = widen_input_conv(self.backbone, in_channels)
        except ValueError as error:
            raise ValueError(f'ExpandedInputBackbone: {error}') from error

    def init_weights(self) -> None:
        """The wrapped backbone's own init, then the Pretrained checkpoint
        with the input convolution widened."""
        already_initialised = self.is_init
        super().init_weights()  # the wrapped backbone's init (warns if repeated)
        if already_initialised or self.pretrained_cfg is None:
            return
        state_dict = load_pretrained_state_dict(
            self.pretrained_cfg['checkpoint'],
            prefix=self.pretrained_cfg.get('prefix'),
            map_location=self.pretrained_cfg.get('map_location', 'cpu'))
        owner = f'{type(self).__name__}({type(self.backbone).__name__})'
        load_expanded_state_dict(self.backbone, state_dict, self.input_conv_name, owner)
