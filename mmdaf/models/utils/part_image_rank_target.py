"""The paper's ranking target: the cross entropy of the boxes' part images."""
from typing import Optional, Tuple

import torch
from mmpretrain.registry import TASK_UTILS
from torch import Tensor

from .ranking_batch import RankingBatch, per_box_cross_entropy


@TASK_UTILS.register_module()
class PartImageRankTarget:
    """Rank each box by the student's cross entropy on its part image.

    The proposals take the cross entropy of the part images of the part pass
    (all N boxes sharp, paper Sec. 3.3); the sampled anchors, when the step
    has them, that of single-box part images (only their own box sharp), from
    one more student pass without gradient. Lower cross entropy ranks first.
    """

    #: The classifier runs the part pass on every ranking step.
    uses_part_images = True

    def __call__(self, batch: RankingBatch) -> Tuple[Tensor, Optional[Tensor]]:
        """The targets of one step.

        Args:
            batch (RankingBatch): the step; ``proposal_ce`` must be given.

        Returns:
            tuple: (B, N) targets of the proposals and (B, K) of the samples
            (None on a step without samples).
        """
        if batch.proposal_ce is None:
            raise ValueError('PartImageRankTarget ranks the proposals by their part '
                             'images: RankingBatch.proposal_ce must be given')
        if batch.samples is None:
            return batch.proposal_ce, None
        with torch.no_grad():
            images = batch.part_images.single_box_images(batch.inputs, batch.samples)
            sample_ce = per_box_cross_entropy(batch.classify(images), batch.labels,
                                              batch.samples.shape[1])
        return batch.proposal_ce, sample_ce
