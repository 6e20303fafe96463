"""Priors that make unsupervised part maps find several distinct parts.

After PDiscoNet (van der Klis et al., ICCV 2023): a part should be compact
(concentration), look unlike the other parts (orthogonality) and appear in
some image of the batch (presence), and the background in every image.
Each function takes soft part maps ``(B, P + 1, h, w)`` whose last channel is
the background and whose channels sum to one at every cell.
"""
from typing import Tuple

import torch
from torch import Tensor

EPS = 1e-6


def cell_coordinates(height: int, width: int, like: Tensor) -> Tuple[Tensor, Tensor]:
    """(h, w) row and column coordinates of the cell centres, in [0, 1]
    (the map's side is 1, so the losses do not depend on its size)."""
    rows = (torch.arange(height, device=like.device, dtype=like.dtype) + 0.5) / height
    cols = (torch.arange(width, device=like.device, dtype=like.dtype) + 0.5) / width
    return rows[:, None].expand(height, width), cols[None, :].expand(height, width)


def part_centroids(part_maps: Tensor) -> Tensor:
    """(B, P, h, w) part maps -> (B, P, 2) centres of mass (row, col) in [0, 1]."""
    rows, cols = cell_coordinates(*part_maps.shape[-2:], like=part_maps)
    mass = part_maps.sum(dim=(2, 3)) + EPS
    row = (part_maps * rows).sum(dim=(2, 3)) / mass
    col = (part_maps * cols).sum(dim=(2, 3)) / mass
    return torch.stack([row, col], dim=-1)


def concentration_loss(part_maps: Tensor) -> Tensor:
    """Mean spatial variance of each part map around its centre of mass.

    Args:
        part_maps (Tensor): (B, P + 1, h, w), background last (not counted).

    Returns:
        Tensor: scalar; 0 when every part sits in one cell, 1/6 for a part
        spread evenly over the map (1/12 per axis).
    """
    parts = part_maps[:, :-1]
    rows, cols = cell_coordinates(*parts.shape[-2:], like=parts)
    centre = part_centroids(parts)
    squared_distance = ((rows - centre[..., 0, None, None]) ** 2 +
                        (cols - centre[..., 1, None, None]) ** 2)
    variance = (parts * squared_distance).sum(dim=(2, 3)) / (parts.sum(dim=(2, 3)) + EPS)
    return variance.mean()


def orthogonality_loss(part_features: Tensor) -> Tensor:
    """Mean squared cosine similarity between the features of different parts
    of the same image.

    Args:
        part_features (Tensor): (B, P, D) features pooled in each part map.

    Returns:
        Tensor: scalar in [0, 1]; 0 when the parts' features are orthogonal,
        1 when they are all parallel.
    """
    num_parts = part_features.shape[1]
    if num_parts < 2:
        return part_features.sum() * 0
    unit = part_features / (part_features.norm(dim=-1, keepdim=True) + EPS)
    cosine = unit @ unit.transpose(1, 2)
    off_diagonal = ~torch.eye(num_parts, dtype=torch.bool, device=cosine.device)
    return (cosine[:, off_diagonal] ** 2).mean()


def presence_loss(part_maps: Tensor) -> Tensor:
    """Every part is present in some image of the batch, the background in
    every image.

    A part's presence is its largest cell value over the batch; the
    background's is its largest cell value in each image.

    Args:
        part_maps (Tensor): (B, P + 1, h, w), background last.

    Returns:
        Tensor: scalar, ``mean_p (1 - presence_p)`` plus ``mean_b (1 -
        background presence_b)``; 0 when each part reaches 1 somewhere.
    """
    cell_max = part_maps.flatten(2).amax(dim=2)  # (B, P + 1)
    part_presence = cell_max[:, :-1].amax(dim=0)
    background_presence = cell_max[:, -1]
    return (1 - part_presence).mean() + (1 - background_presence).mean()

