"""Sampled ranking anchors of the SPPN (``rank_samples``, ``rank_interval``).

Without them the ranking loss only ever orders the N boxes the head already
scores highest, so anchors it never proposes get no content signal
(docs/benchmarks.md, "Why the defaults").
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..utils.anchor_candidates import DenseCandidates


class RankSamplingMixin:
    """Draws random candidate anchors for the ranking loss, on a schedule.

    Mixed into :class:`SPPNHead`, which provides the attributes
    ``rank_samples`` (K), ``rank_interval`` (k), ``_rank_step_count`` and
    ``loss_rank``, and the methods ``_dense_candidates``, ``_top_n`` and
    ``_boxes_at`` (one dense pass with its candidate mask, the top-N
    proposals of that pass, decoded boxes at given anchors).
    """

    def propose_and_sample(self,
                           feats: Sequence[Tensor],
                           img_shape: Tuple[int, int],
                           object_mask: Optional[Tensor] = None
                           ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`propose` and :meth:`sample_anchors` (``rank_samples``
        anchors) from one dense pass of the head, as the training step needs.

        Returns:
            tuple: ``boxes`` (B, N, 4), ``scores`` (B, N), ``sample_boxes``
            (B, K, 4), ``sample_scores`` (B, K); all keep their graph.
        """
        dense = self._dense_candidates(feats, img_shape, object_mask)
        boxes, scores = self._top_n(dense, img_shape)
        sample_boxes, sample_scores = self._draw(dense, img_shape, self.rank_samples)
        return boxes, scores, sample_boxes, sample_scores

    def sample_anchors(self,
                       feats: Sequence[Tensor],
                       img_shape: Tuple[int, int],
                       object_mask: Optional[Tensor] = None,
                       num_samples: Optional[int] = None,
                       generator: Optional[torch.Generator] = None
                       ) -> Tuple[Tensor, Tensor]:
        """Boxes and scores of anchors drawn uniformly among the candidates.

        These are the extra boxes the ranking loss orders (``rank_samples``):
        drawn among the anchors whose centre lies in ``object_mask``, without
        replacement unless some image of the batch has fewer than K
        candidates (then with replacement, for the whole batch).

        Args:
            feats (Sequence[Tensor]): FPN levels, finest first.
            img_shape (Tuple[int, int]): (H, W) of the network input.
            object_mask (Tensor, optional): (B, 1, h, w) bool object mask.
            num_samples (int, optional): K; defaults to ``rank_samples``.
            generator (torch.Generator, optional): random source of the draw.

        Returns:
            tuple: ``boxes`` (B, K, 4) xyxy input pixels, clipped (decoded with
            the deltas under ``regress_boxes``), and ``scores`` (B, K), still
            attached to the graph.
        """
        num_samples = self.rank_samples if num_samples is None else num_samples
        if num_samples < 1:
            raise ValueError(f'num_samples must be >= 1, got {num_samples}')
        dense = self._dense_candidates(feats, img_shape, object_mask)
        return self._draw(dense, img_shape, num_samples, generator)

    def _draw(self, dense: DenseCandidates, img_shape: Tuple[int, int], num_samples: int,
              generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """(B, K, 4) boxes and (B, K) scores of K candidates drawn per image."""
        is_candidate = dense.is_candidate
        enough = bool((is_candidate.sum(dim=1) >= num_samples).all())
        picked = torch.multinomial(is_candidate.float(), num_samples,
                                   replacement=not enough, generator=generator)  # (B, K)
        return self._boxes_at(dense, picked, img_shape), dense.scores.gather(1, picked)

    def samples_this_step(self) -> bool:
        """Whether this training forward draws and ranks sampled anchors.

        Call once per training forward: it advances the step count of
        ``rank_interval``. False whenever ``rank_samples`` is 0.
        """
        if self.rank_samples == 0:
            return False
        samples = self._rank_step_count % self.rank_interval == 0
        self._rank_step_count += 1
        return samples

    def ranks(self, with_samples: bool) -> bool:
        """Whether a training step with or without sampled anchors applies
        the ranking loss: every step with ``rank_interval`` 1 (the N
        proposals alone when no samples are given), only the steps with
        samples otherwise (the others add a ranking loss of zero).

        Args:
            with_samples (bool): whether the step drew sampled anchors.
        """
        return self.rank_interval == 1 or with_samples

    def _rank_loss(self, part_scores: Tensor, part_ce: Optional[Tensor],
                   sample_scores: Optional[Tensor],
                   sample_ce: Optional[Tensor]) -> Tensor:
        """The ranking term of :meth:`loss` (see there for the arguments):
        ``rank_interval`` times ``loss_rank`` on the proposals and samples
        together when this step ranks, else zero (in the graph)."""
        if (sample_scores is None) != (sample_ce is None):
            raise ValueError('sample_scores and sample_ce must be given together')
        ranks = self.ranks(with_samples=sample_scores is not None)
        if part_ce is None and ranks:
            raise ValueError('part_ce is None, but this step ranks the boxes '
                             f'(rank_interval={self.rank_interval}, samples '
                             f'{"given" if sample_scores is not None else "not given"})')
        if part_ce is not None and part_ce.shape != part_scores.shape:
            raise ValueError(f'part_ce must be (B, N) = {tuple(part_scores.shape)}, '
                             f'got {tuple(part_ce.shape)}')
        rank_scores, rank_ce = part_scores, part_ce
        if sample_scores is not None:
            if sample_scores.shape[0] != part_scores.shape[0] or \
                    sample_ce.shape != sample_scores.shape:
                raise ValueError(f'sample_scores and sample_ce must both be (B, K) '
                                 f'with B = {part_scores.shape[0]}, got '
                                 f'{tuple(sample_scores.shape)} and '
                                 f'{tuple(sample_ce.shape)}')
            rank_scores = torch.cat([part_scores, sample_scores], dim=1)
            rank_ce = torch.cat([part_ce, sample_ce], dim=1)
        if ranks:
            return self.rank_interval * self.loss_rank(rank_scores, rank_ce.detach())
        return part_scores.sum() * 0
