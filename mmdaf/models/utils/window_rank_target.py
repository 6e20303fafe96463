"""Ranking target from small windows around the boxes (synthetic default)."""
from typing import Optional, Tuple

import torch
from mmpretrain.registry import TASK_UTILS
from torch import Tensor

from .ranking_batch import RankingBatch, per_box_cross_entropy


@TASK_UTILS.register_module()
class WindowRankTarget:
    """Rank each box by the student's cross entropy on a ``crop`` x ``crop``
    window of its single-box part image, centred on the box.

    The proposals and the sampled anchors are ranked by the same kind of
    input, so that a proposal is compared with a sample by its box, not by
    the input (docs/benchmarks_history.md, "One kind of cross entropy for the
    ranking"). One student pass over the N + K windows, no gradient; no part
    pass is needed for the ranking.

    Args:
        crop (int): the window side S in input pixels. Defaults to 24.
    """

    uses_part_images = False

    def __init__(self, crop: int = 24) -> None:
        if crop < 1:
            raise ValueError(f'WindowRankTarget: crop must be >= 1, got {crop}')
        self.crop = crop

    def __call__(self, batch: RankingBatch) -> Tuple[Tensor, Optional[Tensor]]:
        """The targets of one step.

        Args:
            batch (RankingBatch): the step; ``proposal_ce`` is not read.

        Returns:
            tuple: (B, N) targets of the proposals and (B, K) of the samples
            (None on a step without samples).
        """
        if getattr(batch.part_images, 'scale', 1.0) != 1.0:
            # The windows are cut at the boxes' input-pixel positions.
            raise ValueError('WindowRankTarget needs part images at the input '
                             f'geometry (part_images.scale=1), got '
                             f'scale={batch.part_images.scale}')
        boxes = batch.proposals.detach()
        if batch.samples is not None:
            boxes = torch.cat([boxes, batch.samples], dim=1)
        with torch.no_grad():
            windows = batch.part_images.single_box_windows(batch.inputs, boxes, self.crop)
            ce = per_box_cross_entropy(batch.classify(windows), batch.labels,
                                       boxes.shape[1])
        if batch.samples is None:
            return ce, None
        proposal_ce, sample_ce = ce.split([batch.proposals.shape[1],
                                           batch.samples.shape[1]], dim=1)
        return proposal_ce, sample_ce
