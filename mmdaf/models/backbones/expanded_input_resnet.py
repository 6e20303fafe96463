"""ResNet with more than 3 input channels that loads 3-channel weights.

DAF-net's teacher reads the image concatenated with the location heatmap and
the part saliency mask, (B, 5, H, W). ImageNet checkpoints have a 3-channel
stem; this backbone loads them with the extra input channels set to zero, so
that at the start of training the teacher sees exactly the pretrained RGB
network and learns how much to use the two attention channels.
"""
import logging
import re
from typing import List, Optional, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import initialize
from mmengine.runner import CheckpointLoader
from mmpretrain.registry import MODELS
from torch import Tensor

from .non_reentrant_cp_resnet import NonReentrantCPResNet


def expand_input_conv_weight(weight: Tensor, in_channels: int) -> Tensor:
    """Widen a convolution weight along its input channels with zeros.

    Args:
        weight (Tensor): Weight of shape (O, C_ckpt, k, k), e.g. C_ckpt = 3.
        in_channels (int): Target input channels, at least C_ckpt.

    Returns:
        Tensor: Shape (O, in_channels, k, k), same dtype and device; channels
        ``0 .. C_ckpt-1`` equal ``weight`` exactly, the others are zero.
    """
    if weight.dim() != 4:
        raise ValueError('weight must have shape (O, C, k, k), got '
                         f'{tuple(weight.shape)}')
    ckpt_channels = weight.shape[1]
    if in_channels < ckpt_channels:
        raise ValueError(f'in_channels={in_channels} is smaller than the '
                         f'{ckpt_channels} input channels of the weight')
    expanded = weight.new_zeros(
        (weight.shape[0], in_channels) + tuple(weight.shape[2:]))
    expanded[:, :ckpt_channels] = weight
    return expanded


def _split_init_cfg(
        init_cfg: Union[dict, List[dict], None]) -> Tuple[Optional[dict], list]:
    """Separate the Pretrained entry of an init_cfg from the others."""
    if not init_cfg:
        return None, []
    cfgs = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg)
    pretrained = [cfg for cfg in cfgs if cfg.get('type') == 'Pretrained']
    others = [cfg for cfg in cfgs if cfg.get('type') != 'Pretrained']
    if len(pretrained) > 1:
        raise ValueError(f'init_cfg has more than one Pretrained entry: {cfgs}')
    return (pretrained[0] if pretrained else None), others


def load_pretrained_state_dict(checkpoint: str,
                               prefix: Optional[str] = None,
                               map_location: str = 'cpu') -> dict:
    """Read a state dict the way mmengine's ``PretrainedInit`` does.

    Unwraps ``checkpoint['state_dict']`` if present, keeps only the keys
    under ``prefix`` (stripped, e.g. ``prefix='backbone'``) and strips a
    leading ``module.`` left by DDP.

    Args:
        checkpoint (str): Path or URL understood by mmengine's
            ``CheckpointLoader`` (local file, ``torchvision://``, http...).
        prefix (str, optional): Sub-module prefix. Defaults to None.
        map_location (str): Defaults to 'cpu'.

    Returns:
        dict: Parameter name -> tensor.
    """
    loaded = CheckpointLoader.load_checkpoint(
        checkpoint, map_location=map_location, logger='current')
    if not isinstance(loaded, dict):
        raise RuntimeError(f'No state_dict found in checkpoint {checkpoint}')
    state_dict = loaded.get('state_dict', loaded)
    state_dict = {re.sub(r'^module\.', '', k): v for k, v in state_dict.items()}
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state_dict = {
            k[len(prefix):]: v
            for k, v in state_dict.items() if k.startswith(prefix)
        }
        if not state_dict:
            raise ValueError(f'prefix {prefix!r} matches no key in '
                             f'checkpoint {checkpoint}')
    return state_dict


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
        """State-dict key of the stem's first convolution weight."""
        return 'stem.0.conv.weight' if self.deep_stem else 'conv1.weight'

    def init_weights(self) -> None:
        """Initialise, loading a Pretrained checkpoint with stem expansion."""
        pretrained_cfg, other_cfgs = _split_init_cfg(self.init_cfg)
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
        """Load a state dict, widening a narrower first stem convolution.

        Args:
            state_dict (dict): Parameter name -> tensor; not modified.
        """
        state_dict = dict(state_dict)
        key = self.first_conv_key
        model_weight = self.state_dict()[key]
        if key in state_dict and state_dict[key].shape != model_weight.shape:
            ckpt_weight = state_dict[key]
            if (ckpt_weight.dim() != 4 or ckpt_weight.shape[0] !=
                    model_weight.shape[0] or ckpt_weight.shape[2:] !=
                    model_weight.shape[2:]):
                raise ValueError(
                    f'{key} of the checkpoint has shape '
                    f'{tuple(ckpt_weight.shape)}, incompatible with the '
                    f"model's {tuple(model_weight.shape)}")
            state_dict[key] = expand_input_conv_weight(ckpt_weight,
                                                       self.in_channels)
            ckpt_channels = ckpt_weight.shape[1]
            print_log(
                f'{type(self).__name__}: expanded checkpoint weight "{key}" '
                f'from {tuple(ckpt_weight.shape)} to '
                f'{tuple(state_dict[key].shape)}: input channels '
                f'0-{ckpt_channels - 1} copied from the checkpoint, channels '
                f'{ckpt_channels}-{self.in_channels - 1} set to zero.',
                logger='current')
        with torch.no_grad():
            result = self.load_state_dict(state_dict, strict=False)
        if result.missing_keys:
            print_log(f'{type(self).__name__}: keys missing in the checkpoint '
                      f'(left as initialised): {result.missing_keys}',
                      logger='current', level=logging.WARNING)
        if result.unexpected_keys:
            print_log(f'{type(self).__name__}: checkpoint keys not used by '
                      f'the model: {result.unexpected_keys}', logger='current')
