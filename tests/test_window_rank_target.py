"""WindowRankTarget alone, built from a config dict: each box ranked by the
cross entropy of an S x S window of its single-box part image, on hand-made
images and a hand-made student whose logits are (0, mean pixel value)."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS, TASK_UTILS

import mmdaf  # noqa: F401  (registers the ranking targets)
from mmdaf.models.utils.part_images import crop_around_boxes
from mmdaf.models.utils.ranking_batch import RankingBatch
from mmdaf.models.utils.window_rank_target import WindowRankTarget

SIZE = 32
LABELS = torch.tensor([0, 1])
# Per image, two proposals and one sample; windows of 8 px centred on each
# box, shifted inside the image: left = clamp(round(centre_x - 4), 0, 24).
PROPOSALS = torch.tensor([[[0., 0., 4., 4.], [12., 4., 20., 12.]],      # left 0, 12
                          [[28., 28., 32., 32.], [6., 0., 10., 4.]]])   # left 24, 4
SAMPLES = torch.tensor([[[20., 0., 30., 10.]],                          # left 21
                        [[0., 10., 2., 20.]]])                          # left 0


def ramp_images() -> torch.Tensor:
    """(2, 3, 32, 32) images whose pixels hold their column index / 8."""
    return (torch.arange(SIZE, dtype=torch.float32) / 8).expand(2, 3, SIZE, SIZE).clone()


def window_mean(left: int) -> float:
    """Mean of an 8 px wide window of the ramp starting at column ``left``."""
    return (left + 3.5) / 8


def ce_by_hand(mean: float, label: int) -> float:
    """Cross entropy of logits (0, mean): softplus(mean) for label 0,
    softplus(-mean) for label 1."""
    return math.log1p(math.exp(mean if label == 0 else -mean))


class MeanStudent:
    """logits (0, w * mean pixel) of each image; records its calls."""

    def __init__(self, weight: float = 1.0, dtype=torch.float32):
        self.weight = torch.tensor(weight, requires_grad=True)
        self.dtype = dtype
        self.calls = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(images)
        means = images.mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(means), self.weight * means], 1).to(self.dtype)


def generator(**cfg):
    return MODELS.build(dict(type='PartImageGenerator', **cfg))


def ranking_batch(student, samples=SAMPLES, part_images=None, inputs=None,
                  proposals=PROPOSALS, proposal_ce=None) -> RankingBatch:
    return RankingBatch(ramp_images() if inputs is None else inputs, LABELS, proposals,
                        samples, proposal_ce, student,
                        part_images or generator(blur_sigma_ratio=0.0))


def test_builds_from_a_config_dict():
    target = TASK_UTILS.build(dict(type='WindowRankTarget', crop=16))
    assert isinstance(target, WindowRankTarget) and target.crop == 16
    assert TASK_UTILS.build(dict(type='WindowRankTarget')).crop == 24
    # No part pass for the ranking: the classifier skips it for this target.
    assert target.uses_part_images is False


def test_proposals_and_samples_by_their_windows_by_hand():
    target = TASK_UTILS.build(dict(type='WindowRankTarget', crop=8))
    student = MeanStudent()
    # The proposals' part-image cross entropy is not read.
    proposal_ce, sample_ce = target(ranking_batch(student, proposal_ce=torch.full((2, 2),
                                                                                  -1.0)))
    # One student pass over the N + K windows of each image, image-major.
    assert len(student.calls) == 1 and student.calls[0].shape == (2 * 3, 3, 8, 8)
    assert proposal_ce.shape == (2, 2) and sample_ce.shape == (2, 1)
    assert proposal_ce.dtype == sample_ce.dtype == torch.float32
    lefts = [[0, 12, 21], [24, 4, 0]]
    expected = torch.tensor([[ce_by_hand(window_mean(left), label) for left in image_lefts]
                             for image_lefts, label in zip(lefts, (0, 1))])
    torch.testing.assert_close(proposal_ce, expected[:, :2])
    torch.testing.assert_close(sample_ce, expected[:, 2:])
    # Without gradient, into the student or the boxes.
    assert not proposal_ce.requires_grad and not sample_ce.requires_grad


def test_a_step_without_samples_ranks_the_proposals_alone():
    target = WindowRankTarget(crop=8)
    student = MeanStudent()
    with_samples = target(ranking_batch(MeanStudent()))[0]
    proposal_ce, sample_ce = target(ranking_batch(student, samples=None))
    assert sample_ce is None
    assert len(student.calls) == 1 and student.calls[0].shape == (2 * 2, 3, 8, 8)
    torch.testing.assert_close(proposal_ce, with_samples)


def test_windows_keep_the_box_sharp_and_blur_the_rest():
    torch.manual_seed(0)
    inputs = torch.randn(2, 3, SIZE, SIZE)
    parts = generator(blur_sigma_ratio=1 / 16)
    student = MeanStudent(weight=4.0)
    proposal_ce, sample_ce = WindowRankTarget(crop=8)(
        ranking_batch(student, part_images=parts, inputs=inputs))
    boxes = torch.cat([PROPOSALS, SAMPLES], dim=1)
    expected_windows = crop_around_boxes(parts.single_box_images(inputs, boxes),
                                         boxes.reshape(-1, 4), 8)
    assert torch.equal(student.calls[0], expected_windows)
    # Window 0 (box [0, 4) x [0, 4) at its top left) is sharp in the box only.
    assert torch.equal(student.calls[0][0, :, :4, :4], inputs[0, :, :4, :4])
    assert not torch.equal(student.calls[0][0, :, 4:, 4:], inputs[0, :, 4:, 4:])
    expected = F.cross_entropy(MeanStudent(weight=4.0)(expected_windows),
                               LABELS.repeat_interleave(3), reduction='none').view(2, 3)
    torch.testing.assert_close(torch.cat([proposal_ce, sample_ce], dim=1), expected)


def test_a_window_as_large_as_the_image_is_the_whole_single_box_image():
    torch.manual_seed(0)
    inputs = torch.randn(2, 3, SIZE, SIZE)
    parts = generator(blur_sigma_ratio=1 / 16)
    _, whole = WindowRankTarget(crop=SIZE)(
        ranking_batch(MeanStudent(), part_images=parts, inputs=inputs))
    _, image_ce = TASK_UTILS.build(dict(type='PartImageRankTarget'))(
        ranking_batch(MeanStudent(), part_images=parts, inputs=inputs,
                      proposal_ce=torch.zeros(2, 2)))
    torch.testing.assert_close(whole, image_ce)
    # A smaller window ranks by less of the image: other targets.
    _, windowed = WindowRankTarget(crop=8)(
        ranking_batch(MeanStudent(), part_images=parts, inputs=inputs))
    assert not torch.allclose(windowed, whole)


def test_half_precision_logits_give_float32_targets():
    proposal_ce, sample_ce = WindowRankTarget(crop=8)(
        ranking_batch(MeanStudent(dtype=torch.float16)))
    assert proposal_ce.dtype == sample_ce.dtype == torch.float32


def test_bad_crop_and_part_image_scale_are_refused():
    with pytest.raises(ValueError, match='WindowRankTarget: crop must be >= 1, got 0'):
        TASK_UTILS.build(dict(type='WindowRankTarget', crop=0))
    scaled = ranking_batch(MeanStudent(), part_images=generator(scale=0.5))
    with pytest.raises(ValueError, match=r'WindowRankTarget needs part images at the input '
                       r'geometry \(part_images.scale=1\), got scale=0.5'):
        WindowRankTarget(crop=8)(scaled)
