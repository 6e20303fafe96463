"""PartImageRankTarget alone, built from a config dict: the proposals keep
their part images' cross entropy from the part pass, the sampled anchors get
that of their single-box part images; hand-made images and a hand-made
student whose logits are (0, mean pixel value)."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS, TASK_UTILS

import mmdaf  # noqa: F401  (registers the ranking targets)
from mmdaf.models.utils.part_image_rank_target import PartImageRankTarget
from mmdaf.models.utils.part_images import boxes_to_pixel_masks
from mmdaf.models.utils.ranking_batch import RankingBatch, per_box_cross_entropy

SIZE = 16
LABELS = torch.tensor([0, 1])
PROPOSALS = torch.tensor([[[0., 0., 4., 4.]] * 3, [[8., 8., 16., 16.]] * 3])
# Areas 64, 128 | 256, 16 of the 256-pixel image.
SAMPLES = torch.tensor([[[0., 0., 8., 8.], [0., 0., 16., 8.]],
                        [[0., 0., 16., 16.], [4., 4., 8., 8.]]])


class MeanStudent:
    """logits (0, w * mean pixel) of each image; records its calls."""

    def __init__(self, weight: float = 1.0):
        self.weight = torch.tensor(weight, requires_grad=True)
        self.calls = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(images)
        means = images.mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(means), self.weight * means], 1)


class BoxKeeper:
    """A part image generator that keeps each box's pixels and zeroes the
    rest: a single-box image of an all-ones image has the box's area share
    as its mean."""

    def __init__(self):
        self.calls = []

    def single_box_images(self, imgs, boxes):
        self.calls.append(boxes)
        masks = boxes_to_pixel_masks(boxes, imgs.shape[-2:])  # (B, K, H, W)
        return (imgs[:, None] * masks[:, :, None]).flatten(0, 1)


def softplus(value: float) -> float:
    return math.log1p(math.exp(value))


def ranking_batch(student, samples=SAMPLES, proposal_ce=None, part_images=None,
                  inputs=None) -> RankingBatch:
    if proposal_ce is None:
        proposal_ce = torch.tensor([[0.5, 1.0, 2.0], [0.25, 3.0, 1.5]])
    return RankingBatch(torch.ones(2, 3, SIZE, SIZE) if inputs is None else inputs, LABELS,
                        PROPOSALS, samples, proposal_ce, student,
                        BoxKeeper() if part_images is None else part_images)


def test_builds_from_a_config_dict():
    target = TASK_UTILS.build(dict(type='PartImageRankTarget'))
    assert isinstance(target, PartImageRankTarget)
    # The classifier runs the part pass on every ranking step for it.
    assert target.uses_part_images is True


def test_proposals_keep_the_part_pass_cross_entropy():
    target = PartImageRankTarget()
    student = MeanStudent()
    batch = ranking_batch(student, samples=None)
    proposal_ce, sample_ce = target(batch)
    assert proposal_ce is batch.proposal_ce and sample_ce is None
    assert student.calls == [] and batch.part_images.calls == []


def test_samples_by_their_single_box_part_images_by_hand():
    target = PartImageRankTarget()
    student = MeanStudent()
    batch = ranking_batch(student)
    proposal_ce, sample_ce = target(batch)
    assert proposal_ce is batch.proposal_ce
    # One student pass over the B * K single-box images.
    assert len(batch.part_images.calls) == 1 and batch.part_images.calls[0] is SAMPLES
    assert len(student.calls) == 1 and student.calls[0].shape == (4, 3, SIZE, SIZE)
    assert sample_ce.shape == (2, 2) and sample_ce.dtype == torch.float32
    # Means 0.25 and 0.5 (label 0: softplus(m)), 1 and 1/16 (label 1: softplus(-m)).
    expected = torch.tensor([[softplus(0.25), softplus(0.5)],
                             [softplus(-1.0), softplus(-1 / 16)]])
    torch.testing.assert_close(sample_ce, expected)
    assert not sample_ce.requires_grad


def test_samples_with_the_model_s_part_image_generator():
    torch.manual_seed(0)
    inputs = torch.randn(2, 3, SIZE, SIZE)
    parts = MODELS.build(dict(type='PartImageGenerator', blur_sigma_ratio=1 / 8))
    student = MeanStudent(weight=8.0)
    _, sample_ce = PartImageRankTarget()(ranking_batch(student, part_images=parts,
                                                       inputs=inputs))
    expected_images = parts.single_box_images(inputs, SAMPLES)
    assert torch.equal(student.calls[0], expected_images)
    expected = F.cross_entropy(MeanStudent(weight=8.0)(expected_images),
                               LABELS.repeat_interleave(2), reduction='none').view(2, 2)
    torch.testing.assert_close(sample_ce, expected)
    # Each sample's image keeps only its own box sharp: different targets.
    assert sample_ce[0, 0] != sample_ce[0, 1]


def test_without_the_part_pass_cross_entropy_the_target_says_so():
    batch = RankingBatch(torch.ones(2, 3, SIZE, SIZE), LABELS, PROPOSALS, SAMPLES, None,
                         MeanStudent(), BoxKeeper())
    with pytest.raises(ValueError, match='PartImageRankTarget ranks the proposals by their '
                       'part images: RankingBatch.proposal_ce must be given'):
        PartImageRankTarget()(batch)


def test_per_box_cross_entropy_by_hand():
    # Two images, two boxes each, two classes: logits (0, m).
    logits = torch.tensor([[0., 0.], [0., 1.], [0., -1.], [0., 2.]], dtype=torch.float16)
    ce = per_box_cross_entropy(logits, LABELS, 2)
    assert ce.shape == (2, 2) and ce.dtype == torch.float32
    expected = torch.tensor([[math.log(2), softplus(1.0)], [softplus(1.0), softplus(-2.0)]])
    torch.testing.assert_close(ce, expected, rtol=1e-3, atol=1e-3)
