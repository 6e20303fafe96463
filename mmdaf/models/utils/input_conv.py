"""Find, widen and load the first (input) convolution of a backbone.

DAF-net's teacher reads the image concatenated with the location heatmap and
the part saliency mask, (B, 5, H, W), while ImageNet checkpoints have a
3-channel input convolution. These functions are shared by
:class:`ExpandedInputResNet` (a ResNet built with 5 input channels) and
:class:`ExpandedInputBackbone` (any mmpretrain backbone, widened after it is
built): the checkpoint's 3-channel weight is widened with zeros, so that at
the start of training the teacher sees exactly the pretrained RGB network and
learns how much to use the two attention channels.
"""
import copy
import logging
import re
from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader
from torch import Tensor

# Where mmpretrain backbones keep their input convolution, tried in this order
# before the generic search.
INPUT_CONV_NAMES = (
    'conv1',  # ResNet and its relatives
    'stem.0.conv',  # ResNet with deep_stem (a ConvModule)
    'downsample_layers.0.0',  # ConvNeXt
    'patch_embed.projection',  # Swin, ViT and the other PatchEmbed users
)


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


def split_init_cfg(
        init_cfg: Union[dict, List[dict], None]) -> Tuple[Optional[dict], list]:
    """Separate the Pretrained entry of an init_cfg from the others.

    Returns:
        tuple: the Pretrained dict (or None) and the list of the other entries.
    """
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


def find_input_conv(backbone: nn.Module, in_channels: int = 3) -> Tuple[str, nn.Conv2d]:
    """The input convolution of a backbone: its name and the module.

    The names of :data:`INPUT_CONV_NAMES` are tried first (ResNet ``conv1``
    or ``stem.0.conv``, ConvNeXt ``downsample_layers.0.0``, Swin/ViT
    ``patch_embed.projection``); otherwise the first ``nn.Conv2d`` with
    ``in_channels`` inputs in module registration order, which mmpretrain's
    backbones follow in their forward.

    Args:
        backbone (nn.Module): the built backbone.
        in_channels (int): input channels the convolution must have.
            Defaults to 3 (RGB).

    Returns:
        tuple: (name relative to ``backbone``, the ``nn.Conv2d``).

    Raises:
        ValueError: naming the backbone's type when there is no such
            convolution.
    """
    modules = dict(backbone.named_modules())
    for name in INPUT_CONV_NAMES:
        conv = modules.get(name)
        if isinstance(conv, nn.Conv2d) and conv.in_channels == in_channels:
            return name, conv
    for name, module in modules.items():
        if isinstance(module, nn.Conv2d) and module.in_channels == in_channels:
            return name, module
    raise ValueError(
        f'{type(backbone).__name__} has no nn.Conv2d with {in_channels} input '
        f'channels (looked at {", ".join(INPUT_CONV_NAMES)}, then every '
        'nn.Conv2d): cannot find its input convolution')


def widen_input_conv(backbone: nn.Module, in_channels: int,
                     from_channels: int = 3) -> str:
    """Replace a backbone's input convolution by one with more inputs.

    The new convolution is a copy of the old one (type, stride, padding,
    bias...) whose weight keeps the old values in channels
    ``0 .. from_channels-1`` and zeros after; the backbone's own
    ``init_weights`` or a checkpoint may overwrite it later.

    Args:
        backbone (nn.Module): the built backbone, changed in place.
        in_channels (int): input channels of the new convolution.
        from_channels (int): input channels of the convolution to replace.
            Defaults to 3.

    Returns:
        str: the convolution's name in ``backbone`` (e.g.
        ``'downsample_layers.0.0'``); its state-dict key is
        ``name + '.weight'``.
    """
    name, conv = find_input_conv(backbone, from_channels)
    if in_channels == from_channels:
        return name
    if conv.groups != 1:
        raise ValueError(f'{type(backbone).__name__}.{name} is a grouped '
                         f'convolution (groups={conv.groups}); cannot widen it')
    wide = copy.deepcopy(conv)
    wide.in_channels = in_channels
    wide.weight = nn.Parameter(
        expand_input_conv_weight(conv.weight.detach(), in_channels),
        requires_grad=conv.weight.requires_grad)
    parent_name, _, child_name = name.rpartition('.')
    parent = backbone.get_submodule(parent_name) if parent_name else backbone
    setattr(parent, child_name, wide)
    return name


def load_expanded_state_dict(module: nn.Module, state_dict: dict, conv_name: str,
                             owner: str) -> None:
    """Load a state dict, widening a narrower input convolution weight.

    If ``state_dict[conv_name + '.weight']`` has fewer input channels than the
    module's, it is widened by :func:`expand_input_conv_weight` (checkpoint
    values in the first channels, zeros after) and the key and both shapes
    are logged. Everything is loaded with ``strict=False``; missing and
    unexpected keys are logged.

    Args:
        module (nn.Module): the backbone to load into.
        state_dict (dict): parameter name -> tensor, keys relative to
            ``module``; not modified.
        conv_name (str): name of the input convolution in ``module``.
        owner (str): who loads, for the log lines (e.g. the class name).
    """
    state_dict = dict(state_dict)
    key = f'{conv_name}.weight'
    model_weight = module.state_dict()[key]
    if key in state_dict and state_dict[key].shape != model_weight.shape:
        ckpt_weight = state_dict[key]
        if (ckpt_weight.dim() != 4 or ckpt_weight.shape[0] != model_weight.shape[0]
                or ckpt_weight.shape[2:] != model_weight.shape[2:]):
            raise ValueError(
                f'{key} of the checkpoint has shape {tuple(ckpt_weight.shape)}, '
                f"incompatible with the model's {tuple(model_weight.shape)}")
        in_channels = model_weight.shape[1]
        state_dict[key] = expand_input_conv_weight(ckpt_weight, in_channels)
        ckpt_channels = ckpt_weight.shape[1]
        print_log(
            f'{owner}: expanded checkpoint weight "{key}" from '
            f'{tuple(ckpt_weight.shape)} to {tuple(state_dict[key].shape)}: input '
            f'channels 0-{ckpt_channels - 1} copied from the checkpoint, channels '
            f'{ckpt_channels}-{in_channels - 1} set to zero.',
            logger='current')
    with torch.no_grad():
        result = module.load_state_dict(state_dict, strict=False)
    if result.missing_keys:
        print_log(f'{owner}: keys missing in the checkpoint (left as '
                  f'initialised): {result.missing_keys}',
                  logger='current', level=logging.WARNING)
    if result.unexpected_keys:
        print_log(f'{owner}: checkpoint keys not used by the model: '
                  f'{result.unexpected_keys}', logger='current')
