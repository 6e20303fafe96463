"""What the student pass of DAF-net produces for one batch."""
from typing import NamedTuple, Optional, Tuple

from torch import Tensor


class StudentOutput(NamedTuple):
    """What the student pass produces for one batch.

    Attributes:
        feats: backbone stages (C3, C4, C5).
        logits: (B, K) student class logits.
        heatmap: (B, 1, h8, w8) location heatmap in [0, 1], or None without LHM.
        object_mask: (B, 1, h8, w8) bool, or None without LHM.
        object_area: (B,) object area S in input pixels.
        boxes: (B, N, 4) part boxes, xyxy input pixels, or None without SPPN.
        box_scores: (B, N) SPPN scores of the boxes (not detached), or None.
        sample_boxes: (B, K, 4) random candidate anchors for the ranking loss
            (training with ``SPPNHead(rank_samples=K)``), else None.
        sample_scores: (B, K) their SPPN scores (not detached), or None.
    """
    feats: Tuple[Tensor, ...]
    logits: Tensor
    heatmap: Optional[Tensor]
    object_mask: Optional[Tensor]
    object_area: Tensor
    boxes: Optional[Tensor]
    box_scores: Optional[Tensor]
    sample_boxes: Optional[Tensor] = None
    sample_scores: Optional[Tensor] = None
