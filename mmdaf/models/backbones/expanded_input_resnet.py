"""ResNet with more than 3 input channels that loads 3-channel weights.

DAF-net's teacher reads the image concatenated with the location heatmap and
the part saliency mask, (B, 5, H, W). ImageNet checkpoints have a 3-channel
stem; this backbone loads them with the extra input channels set to zero, so
that at the start of training the teacher sees exactly the pretrained RGB
network and learns how much to use the two attention channels.

It is the ResNet case of :class:`ExpandedInputBackbone` (any mmpretrain
backbone): a ResNet can be built with 5 input channels directly, and both
find the input convolution and load the widened weight with the functions of
:mod:`mmdaf.models.utils.input_conv`; its state-dict keys are ResNet's.
"""
import logging

from mmengine.logging import print_log
from mmengine.model import initialize
from mmpretrain.registry import MODELS

from ..utils.input_conv import (  # noqa: F401  (expand_input_conv_weight: public here too)
    expand_input_conv_weight,
    find_input_conv,
    load_expanded_state_dict,
    load_pretrained_state_dict,
    split_init_cfg,
)
from .non_reentrant_cp_resnet import NonReentrantCPResNet


@MODELS.register_module()
class ExpandedInputResNet(NonReentrantCPResNet):
    """mmpretrain ResNet whose stem takes ``in_channels`` (default 5) inputs.

    ``with_cp=True`` uses non-reentrant activation checkpointing (see
    :class:`NonReentrantCPResNet`), so the teacher can be checkpointed under
    DistributedDataParallel.

    With ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)``
    the checkpoint is loaded by :meth:`init_weights` itself: if its first stem
    convolution (``conv1.weight``, or ``stem.0.conv.weight`` with
    ``deep_stem``) has fewer input channels than the model, it is widened by
    :func:`expand_input_conv_weight` (pretrained weights in channels
    0..C_ckpt-1, zeros after; our choice, so the extra inputs start
    ignored) and the expansion is logged with the key and both shapes.
    Everything is loaded with ``strict=False``; missing and unexpected keys
    (e.g. a classifier's ``fc.*``) are logged. Any other init_cfg behaves as
    in :class:`ResNet`.

    Args:
        depth (int): ResNet depth, one of 18, 34, 50, 101, 152.
        in_channels (int): Input channels. Defaults to 5 (RGB + location
            heatmap + part saliency mask).
        **kwargs: Other :class:`mmpretrain.models.ResNet` arguments,
            ``with_cp`` included.
    """

    def __init__(self, depth: int, in_channels: int = 5, **kwargs):
        super().__init__(depth=depth, in_channels=in_channels, **kwargs)
        self.in_channels = in_channels

    @property
    def first_conv_key(self) -> str:
        """State-dict key of the stem's first convolution weight
        (``conv1.weight``, or ``stem.0.conv.weight`` with ``deep_stem``)."""
        return find_input_conv(self, self.in_channels)[0] + '.weight'

    def init_weights(self) -> None:
        """Initialise, loading a Pretrained checkpoint with stem expansion."""
        pretrained_cfg, other_cfgs = split_init_cfg(self.init_cfg)
        if pretrained_cfg is None:
            super().init_weights()
            return
        if self.is_init:
            print_log(f'init_weights of {type(self).__name__} has been called '
                      'more than once.', logger='current', level=logging.WARNING)
            return
        if other_cfgs:
            initialize(self, other_cfgs)
        state_dict = load_pretrained_state_dict(
            pretrained_cfg['checkpoint'],
            prefix=pretrained_cfg.get('prefix'),
            map_location=pretrained_cfg.get('map_location', 'cpu'))
        self.load_expanded_state_dict(state_dict)
        self._is_init = True

    def load_expanded_state_dict(self, state_dict: dict) -> None:
        """Load a state dict, widening a narrower first stem convolution
        (see :func:`mmdaf.models.utils.input_conv.load_expanded_state_dict`).

        Args:
            state_dict (dict): Parameter name -> tensor; not modified.
        """
        conv_name = self.first_conv_key[:-len('.weight')]
        load_expanded_state_dict(self, state_dict, conv_name, type(self).__name__)
