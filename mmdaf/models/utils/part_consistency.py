"""How often what a box holds recurs in the other images of the batch.

A weakly supervised part signal: a part that every object has (a bird's eye,
its beak) looks alike from image to image, while background clutter lands
anywhere. Scoring each box by how closely the most similar cell of every
other image matches it favours the boxes on such parts, whether or not the
part tells the classes apart on its own.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .box_pooling import box_pooled_features


def cross_image_box_similarity(feat: Tensor, boxes: Tensor, img_shape: Tuple[int, int],
                               cell_mask: Optional[Tensor] = None) -> Tensor:
    """Mean over the other images of each box's best cell match there.

    The features are first centred on their batch mean, so that what every
    cell shares (a plain background, the colour balance) matches nothing.
    Each box's pooled feature is compared by cosine similarity with every
    cell of each other image; the best match per image is averaged over the
    other B - 1 images.

    Args:
        feat (Tensor): (B, C, h, w) features covering the (H, W) input.
        boxes (Tensor): (B, K, 4) xyxy boxes, input pixels.
        img_shape (tuple): (H, W) of the input.
        cell_mask (Tensor, optional): (B, 1, h', w') bool, the cells of each
            image a box may match (the object mask); resized to (h, w) by
            nearest neighbour. An image with no such cell counts all of them.

    Returns:
        Tensor: (B, K) float32 similarities in [-1, 1], no gradient.
    """
    if feat.shape[0] < 2:
        raise ValueError('cross_image_box_similarity compares images of one batch; '
                         f'it needs at least 2, got {feat.shape[0]}')
    with torch.no_grad():
        feat = feat.detach().float()
        feat = feat - feat.mean(dim=(0, 2, 3), keepdim=True)
        box_feats = F.normalize(box_pooled_features(feat, boxes.float(), img_shape), dim=-1)
        cell_feats = F.normalize(feat.flatten(2), dim=1)  # (B, C, h*w)
        # (B_box, K, B_cell, h*w): box k of image i against every cell of image j.
        similarity = torch.einsum('ikc,jcp->ikjp', box_feats, cell_feats)
        if cell_mask is not None:
            allowed = _cells_allowed(cell_mask, feat.shape[-2:])
            similarity = similarity.masked_fill(~allowed[None, None], -2.0)
        best_per_image = similarity.amax(dim=-1)  # (B, K, B)
        batch_size = feat.shape[0]
        others = ~torch.eye(batch_size, dtype=torch.bool, device=feat.device)
        best_per_image = best_per_image * others[:, None, :]
        return best_per_image.sum(dim=-1) / (batch_size - 1)


def _cells_allowed(cell_mask: Tensor, feat_shape: Tuple[int, int]) -> Tensor:
    """(B, 1, h', w') bool mask -> (B, h * w) bool at the features' size; an
    image whose mask is empty allows every cell."""
    mask = F.interpolate(cell_mask.float(), size=tuple(feat_shape), mode='nearest')
    mask = mask.flatten(1) > 0.5
    return mask | ~mask.any(dim=1, keepdim=True)
