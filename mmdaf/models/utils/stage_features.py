"""Check that a backbone returns what DAF-net reads: stage feature maps."""
from typing import Any, Tuple

import torch.nn as nn
from torch import Tensor


def backbone_type_name(backbone: nn.Module) -> str:
    """The backbone's class name; a wrapper's with the wrapped one's, e.g.
    ``'NonReentrantCPBackbone(ConvNeXt)'``."""
    inner = getattr(backbone, 'backbone', None)
    if isinstance(inner, nn.Module):
        return f'{type(backbone).__name__}({backbone_type_name(inner)})'
    return type(backbone).__name__


def _describe(feats: Any) -> str:
    if isinstance(feats, Tensor):
        return f'a tensor of shape {tuple(feats.shape)}'
    if isinstance(feats, (tuple, list)):
        shapes = [tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
                  for f in feats]
        return f'{len(feats)} output(s) of shape(s) {shapes}'
    return f'a {type(feats).__name__}'


def check_stage_features(feats: Any, backbone: nn.Module, min_stages: int = 3,
                         role: str = 'backbone') -> Tuple[Tensor, ...]:
    """Raise a clear error unless ``feats`` are at least ``min_stages``
    (B, C, h, w) feature maps.

    DAF-net's student reads three stages (C3, C4, C5, finest first): the
    location heatmap and the FPN use all of them, the classification head
    GAP of the last one and the hint the one picked by
    ``distill.student_index``. mmpretrain backbones return a tuple with one
    entry per ``out_indices``; some return vectors instead of maps (a ViT's
    class token, ConvNeXt with ``gap_before_final_norm=True``).

    Args:
        feats: what ``backbone(inputs)`` returned.
        backbone (nn.Module): the backbone, named in the error.
        min_stages (int): stages needed. Defaults to 3.
        role (str): which backbone, for the error (e.g. ``'teacher backbone'``).

    Returns:
        tuple: ``feats`` as a tuple of (B, C, h, w) tensors.

    Raises:
        ValueError: naming the backbone type and what it returned.
    """
    name = backbone_type_name(backbone)
    if not isinstance(feats, (tuple, list)) or len(feats) < min_stages:
        raise ValueError(
            f'DAFClassifier: the {role} ({name}) returned {_describe(feats)}; it '
            f'must return a tuple of at least {min_stages} stage feature maps '
            f'(B, C, h, w), finest first (for mmpretrain backbones set '
            f'out_indices, e.g. out_indices=(1, 2, 3))')
    for index, feat in enumerate(feats):
        if not isinstance(feat, Tensor) or feat.dim() != 4:
            raise ValueError(
                f'DAFClassifier: the {role} ({name}) returned {_describe(feats)}; '
                f'output {index} is not a (B, C, h, w) feature map (a ViT needs '
                "out_type='featmap', ConvNeXt gap_before_final_norm=False)")
    return tuple(feats)

