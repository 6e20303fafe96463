"""RankSamplingMixin on a minimal host: the draw, the schedule, the ranking
term. ``tests/test_sppn_rank_samples.py`` covers it inside SPPNHead."""
import pytest
import torch

from mmdaf.models.dense_heads.rank_sampling import RankSamplingMixin
from mmdaf.models.losses import PartRankingLoss
from mmdaf.models.utils.anchor_candidates import DenseCandidates


class _Host(RankSamplingMixin):
    """What SPPNHead provides the mixin; boxes are the anchors themselves."""

    def __init__(self, rank_samples, rank_interval=1):
        self.rank_samples = rank_samples
        self.rank_interval = rank_interval
        self._rank_step_count = 0
        self.loss_rank = PartRankingLoss(margin=1.0, loss_weight=0.5)

    def _boxes_at(self, dense, index, img_shape):
        return dense.anchors[index]


def _dense(is_candidate):
    num_anchors = is_candidate.shape[1]
    anchors = torch.arange(num_anchors * 4, dtype=torch.float32).view(num_anchors, 4)
    scores = torch.arange(is_candidate.numel(), dtype=torch.float32).view_as(
        is_candidate)
    return DenseCandidates(anchors, scores, torch.zeros(*is_candidate.shape, 4),
                           is_candidate, None)


def test_draw_takes_candidates_without_replacement_when_every_image_has_enough():
    is_candidate = torch.tensor([[True, False, True, True, False, True],
                                 [False, True, True, True, True, False]])
    dense = _dense(is_candidate)
    boxes, scores = _Host(3)._draw(dense, (8, 8), 3, torch.Generator().manual_seed(0))
    picked = scores.long() - torch.tensor([[0], [6]])  # scores are flat indices
    assert boxes.shape == (2, 3, 4) and scores.shape == (2, 3)
    assert torch.equal(boxes, dense.anchors[picked])
    for img in range(2):
        assert is_candidate[img, picked[img]].all()
        assert len(set(picked[img].tolist())) == 3
    # Image 1 with a single candidate: the whole batch draws with replacement.
    is_candidate[1] = torch.tensor([False, False, True, False, False, False])
    _, scores = _Host(3)._draw(_dense(is_candidate), (8, 8), 3)
    assert scores[1].tolist() == [8.0, 8.0, 8.0]


def test_schedule_samples_every_kth_step_and_ranks_on_those_only():
    host = _Host(2, rank_interval=3)
    assert [host.samples_this_step() for _ in range(5)] == [True, False, False, True,
                                                           False]
    assert host.ranks(with_samples=True) and not host.ranks(with_samples=False)
    every = _Host(2)
    assert every.ranks(with_samples=False)
    assert not _Host(0).samples_this_step()


def test_rank_loss_orders_proposals_and_samples_times_the_interval():
    host = _Host(2, rank_interval=3)
    # The hinges sum to 6.0 (test_sppn_rank_samples): weight 0.5, interval 3.
    loss = host._rank_loss(torch.tensor([[0.0]]), torch.tensor([[1.0]]),
                           torch.tensor([[0.5, 2.0]]), torch.tensor([[0.5, 2.0]]))
    assert loss.item() == pytest.approx(9.0)
    scores = torch.tensor([[0.0, 5.0]], requires_grad=True)
    off = host._rank_loss(scores, None, None, None)
    assert off.item() == 0.0 and off.requires_grad


def test_rank_loss_checks_its_inputs():
    host = _Host(2)
    scores = torch.zeros(1, 4)
    with pytest.raises(ValueError, match='given together'):
        host._rank_loss(scores, torch.zeros(1, 4), torch.zeros(1, 2), None)
    with pytest.raises(ValueError, match=r'part_ce is None, but this step ranks the '
                       r'boxes \(rank_interval=1, samples not given\)'):
        host._rank_loss(scores, None, None, None)
    with pytest.raises(ValueError, match=r'part_ce must be \(B, N\) = \(1, 4\)'):
        host._rank_loss(scores, torch.zeros(1, 3), None, None)
    with pytest.raises(ValueError, match=r'both be \(B, K\)'):
        host._rank_loss(scores, torch.zeros(1, 4), torch.zeros(1, 2), torch.zeros(1, 3))
