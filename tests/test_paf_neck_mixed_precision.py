"""The PAF-bilinear neck in fp16 and bf16: exact zeros and dead channels give
finite values and finite gradients.

In fp16 the 1e-12 under the signed square root rounds to 0, so an exactly zero
bilinear entry (a channel that never fires) had a 0 * inf = NaN gradient, and an
all-zero row a 0/0 in the L2 normalisation."""
import math

import pytest
import torch

from mmdaf.models.necks.paf_bilinear_neck import (
    PAFBilinearNeck,
    group_bilinear_pool,
    semantic_grouping_loss,
)

LOW_PRECISION = [torch.float16, torch.bfloat16]


def features_with_dead_channels(dtype: torch.dtype) -> torch.Tensor:
    """(2, 8, 4, 4) ReLU-like maps: channel 3 is dead in both images, channel
    6 in the second one, and a quarter of the other entries are exact zeros."""
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(2, 8, 4, 4, generator=generator) * 4
    features[torch.rand(2, 8, 4, 4, generator=generator) < 0.25] = 0
    features[:, 3] = 0
    features[1, 6] = 0
    return features.to(dtype)


@pytest.mark.parametrize('dtype', LOW_PRECISION)
def test_pooling_with_dead_channels_has_finite_values_and_gradients(dtype):
    features = features_with_dead_channels(dtype).requires_grad_()
    pooled = group_bilinear_pool(features, num_groups=2)
    assert pooled.dtype == dtype and pooled.shape == (2, 2 * 4**2)
    assert torch.isfinite(pooled).all()
    # The same (already rounded) inputs pooled in float64, by the definition.
    reference = group_bilinear_pool(features.detach().double(), num_groups=2)
    tolerance = 4e-3 if dtype == torch.float16 else 2e-2  # one rounding of the output
    assert torch.allclose(pooled.double(), reference, atol=tolerance)

    weights = torch.linspace(-1, 1, pooled.shape[1]).to(dtype)
    (pooled * weights).sum().backward()
    assert features.grad.dtype == dtype
    assert torch.isfinite(features.grad).all()
    # A dead channel's bilinear row and column are exact zeros: sign(0) = 0,
    # so no gradient reaches it.
    assert torch.equal(features.grad[:, 3], torch.zeros_like(features.grad[:, 3]))
    assert torch.equal(features.grad[1, 6], torch.zeros_like(features.grad[1, 6]))
    assert features.grad[0, 6].abs().sum() > 0


@pytest.mark.parametrize('dtype', LOW_PRECISION)
def test_pooling_by_hand_in_low_precision(dtype):
    # Channels (c0, c1 | c2, c3) at 2 positions, c1 dead. Group 0 bilinear
    # (hw = 2): [[1, 0], [0, 0]]; group 1: [[2, 0], [0, 4.5]]. Signed sqrt:
    # [1, 0, 0, 0 | sqrt2, 0, 0, sqrt4.5], squared norm 1 + 2 + 4.5 = 7.5.
    features = torch.tensor([[1., 1.], [0., 0.], [2., 0.], [0., 3.]])
    features = features.reshape(1, 4, 1, 2).to(dtype)
    pooled = group_bilinear_pool(features, num_groups=2)
    expected = torch.tensor([1., 0., 0., 0., math.sqrt(2.), 0., 0., math.sqrt(4.5)])
    expected = expected / math.sqrt(7.5)
    assert torch.allclose(pooled[0].float(), expected, atol=1e-2)


@pytest.mark.parametrize('dtype', LOW_PRECISION + [torch.float32])
def test_all_zero_features_pool_to_zero_without_nan(dtype):
    features = torch.zeros(2, 8, 3, 3, dtype=dtype, requires_grad=True)
    pooled = group_bilinear_pool(features, num_groups=4)
    assert torch.equal(pooled, torch.zeros(2, 16, dtype=dtype))
    pooled.sum().backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


@pytest.mark.parametrize('dtype', LOW_PRECISION)
def test_grouping_loss_with_dead_channels_is_finite_and_float32(dtype):
    features = features_with_dead_channels(dtype).requires_grad_()
    loss = semantic_grouping_loss(features, num_groups=2)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    reference = semantic_grouping_loss(features.detach().double(), num_groups=2)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)
    assert 0.0 <= loss.item() <= 2.0
    loss.backward()
    assert torch.isfinite(features.grad).all()


def neck_with_dead_channels() -> PAFBilinearNeck:
    """A neck whose projection has 3 channels that never fire: zero weights
    and a negative BN bias, so ReLU outputs exact zeros there."""
    torch.manual_seed(0)
    neck = PAFBilinearNeck(in_channels=16, reduced_channels=8, num_groups=2)
    with torch.no_grad():
        neck.projection[0].weight[[1, 4, 5]] = 0
        neck.projection[1].bias[[1, 4, 5]] = -1.0
    return neck.train()


@pytest.mark.parametrize('dtype', LOW_PRECISION)
def test_neck_under_autocast_with_dead_channels_trains_with_finite_gradients(dtype):
    neck = neck_with_dead_channels()
    feats = torch.rand(2, 16, 6, 6, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 1, 48, 48)
    mask[:, :, 8:30, 12:40] = 1
    with torch.autocast('cpu', dtype=dtype):
        grouped = neck.projection(feats)
        (pooled, ), loss_group = neck((feats, ), mask, return_grouping_loss=True)
        loss = pooled.float().sum(dim=1).pow(2).mean() + loss_group
    # the dead channels are exact zeros under autocast too
    assert torch.equal(grouped[:, [1, 4, 5]], torch.zeros_like(grouped[:, [1, 4, 5]]))
    assert torch.isfinite(pooled).all() and torch.isfinite(loss_group)
    loss.backward()
    for name, param in neck.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    # gradient reaches the part attention filter through the pooling
    assert neck.attention[0].weight.grad.abs().sum() > 0
