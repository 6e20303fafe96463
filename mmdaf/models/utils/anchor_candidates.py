"""Which anchors are part candidates: those centred in the object mask.

SPPNHead (paper Sec. 3.3) proposes parts among the anchors whose centre
lies in the location heatmap's object mask.
"""
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor


class DenseCandidates(NamedTuple):
    """One dense pass of the head over a batch, with its candidate anchors.

    Attributes:
        anchors (Tensor): (M, 4) xyxy anchors in input pixels (cached, shared
            between calls: never modify it in place).
        scores (Tensor): (B, M) raw anchor scores.
        deltas (Tensor): (B, M, 4) box deltas.
        is_candidate (Tensor): (B, M) bool candidate mask.
        fixed_boxes (Tensor, optional): (M, 4) the anchors decoded with zero
            deltas and clipped to the input (cached), without
            ``regress_boxes``; None otherwise.
    """

    anchors: Tensor
    scores: Tensor
    deltas: Tensor
    is_candidate: Tensor
    fixed_boxes: Optional[Tensor]


def anchor_mask_cells(anchors: Tensor, img_shape: Tuple[int, int],
                      mask_size: Optional[Tuple[int, int]]) -> Optional[Tensor]:
    """The object-mask cell that holds each anchor centre (nearest lookup).

    Image-independent, so it can be cached per input geometry.

    Args:
        anchors (Tensor): (M, 4) xyxy anchors in input pixels.
        img_shape (Tuple[int, int]): (H, W) of the input.
        mask_size (Tuple[int, int], optional): (h, w) of the object mask,
            which covers the whole input; None without a mask.

    Returns:
        Tensor, optional: (M,) long, the flat index ``row * w + col`` of the
        cell; None when ``mask_size`` is.
    """
    if mask_size is None:
        return None
    mask_h, mask_w = mask_size
    centres_x = (anchors[:, 0] + anchors[:, 2]) / 2
    centres_y = (anchors[:, 1] + anchors[:, 3]) / 2
    cols = (centres_x * mask_w / img_shape[1]).floor().long().clamp(0, mask_w - 1)
    rows = (centres_y * mask_h / img_shape[0]).floor().long().clamp(0, mask_h - 1)
    return rows * mask_w + cols


def select_candidates(cells: Optional[Tensor], object_mask: Optional[Tensor],
                      num_imgs: int, num_anchors: int,
                      device: torch.device) -> Tensor:
    """(B, M) candidate mask: the anchors whose centre cell is in the mask.

    Args:
        cells (Tensor, optional): (M,) long, each anchor's mask cell
            (:func:`anchor_mask_cells`); None when ``object_mask`` is.
        object_mask (Tensor, optional): (B, 1, h, w) bool object mask; None
            makes every anchor a candidate.
        num_imgs (int): B.
        num_anchors (int): M.
        device (torch.device): device of the mask when ``object_mask`` is
            None.

    Returns:
        Tensor: (B, M) bool; an image whose mask keeps no anchor keeps all.
    """
    if object_mask is None:
        return torch.ones((num_imgs, num_anchors), dtype=torch.bool, device=device)
    if object_mask.dim() != 4 or object_mask.shape[1] != 1:
        raise ValueError(f'object_mask must be (B, 1, h, w), got '
                         f'{tuple(object_mask.shape)}')
    if object_mask.shape[0] != num_imgs:
        raise ValueError(f'object_mask has batch size {object_mask.shape[0]}, '
                         f'the features have {num_imgs}')
    # One gather over the flattened mask serves the whole batch.
    is_candidate = object_mask[:, 0].bool().flatten(1).index_select(1, cells)
    return is_candidate | ~is_candidate.any(dim=1, keepdim=True)
