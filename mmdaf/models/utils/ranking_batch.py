"""What a ranking target of the SPPN reads from one training step."""
from typing import Callable, NamedTuple, Optional

import torch.nn.functional as F
from torch import Tensor, nn


class RankingBatch(NamedTuple):
    """The inputs of a ranking target (``rank_target`` of ``DAFClassifier``).

    Attributes:
        inputs (Tensor): (B, 3, H, W) clean images.
        labels (Tensor): (B, ) ground-truth classes.
        proposals (Tensor): (B, N, 4) the SPPN's proposals, xyxy input pixels.
        samples (Tensor, optional): (B, K, 4) the sampled anchors of this step
            (``SPPNHead(rank_samples=K)``), or None.
        proposal_ce (Tensor, optional): (B, N) the cross entropy of the
            proposals' part images from the part pass; None when the step
            ran none (the target's ``uses_part_images`` is False).
        classify (Callable): images (M, 3, h, w) -> (M, num_classes) logits
            of the student, with its BatchNorm layers as in the part pass.
        part_images (nn.Module): the ``PartImageGenerator`` of the model.
    """
    inputs: Tensor
    labels: Tensor
    proposals: Tensor
    samples: Optional[Tensor]
    proposal_ce: Optional[Tensor]
    classify: Callable[[Tensor], Tensor]
    part_images: nn.Module


def per_box_cross_entropy(logits: Tensor, labels: Tensor, num_boxes: int) -> Tensor:
    """(B * M, K) logits of M boxes per image -> (B, M) float32 cross
    entropies against each image's (B, ) label."""
    return F.cross_entropy(logits.float(), labels.repeat_interleave(num_boxes),
                           reduction='none').view(-1, num_boxes)
