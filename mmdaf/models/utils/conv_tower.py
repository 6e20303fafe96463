"""The conv tower of a dense head (RetinaNet style)."""
import torch.nn as nn


def conv_tower(in_channels: int, feat_channels: int, num_convs: int,
               norm_groups: int = 0, kernel_size: int = 3) -> nn.Sequential:
    """``num_convs`` times 3x3 conv (padding 1) [+ GroupNorm] + ReLU.

    Maps (B, in_channels, H, W) to (B, feat_channels, H, W); with
    ``num_convs`` 0 it is the identity (an empty ``nn.Sequential``). The
    layers are numbered in that order (``0`` conv, ``1`` GroupNorm or ReLU,
    ...), which names their state-dict entries.

    Args:
        in_channels (int): channels of the input.
        feat_channels (int): channels of every conv's output.
        num_convs (int): number of conv layers, >= 0.
        norm_groups (int): G > 0 puts a ``GroupNorm(G, feat_channels)``
            between each conv and its ReLU; 0 (default) puts none.
        kernel_size (int): odd side of every conv's kernel, padded to keep
            the size. Defaults to 3.

    Returns:
        nn.Sequential: the tower.
    """
    layers = []
    for i in range(num_convs):
        layers.append(nn.Conv2d(in_channels if i == 0 else feat_channels,
                                feat_channels, kernel_size, padding=kernel_size // 2))
        if norm_groups > 0:
            layers.append(nn.GroupNorm(norm_groups, feat_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)
