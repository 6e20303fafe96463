import math

import pytest
import torch
from mmpretrain.registry import MODELS

from mmdaf.models.necks.paf_bilinear_neck import (
    PAFBilinearNeck,
    group_bilinear_pool,
    resize_mask,
    semantic_grouping_loss,
)


def identity_projection_neck(channels, num_groups, **kwargs):
    """A neck whose projection is the identity up to one shared BN scale.

    In eval mode BN multiplies every channel by 1/sqrt(1 + eps); the L2
    normalisation of the pooled vector and the cosine correlations of the
    grouping loss are both invariant to that common factor.
    """
    neck = PAFBilinearNeck(
        in_channels=channels,
        reduced_channels=channels,
        num_groups=num_groups,
        **kwargs)
    with torch.no_grad():
        neck.projection[0].weight.copy_(
            torch.eye(channels).reshape(channels, channels, 1, 1))
    neck.eval()
    return neck


# Channels (c0, c1 | c2, c3) at positions (p0, p1), two groups.
HAND_FEATURES = torch.tensor([[1., 0.], [1., 1.], [2., 0.], [0., 3.]])
# Group bilinear X_g X_g^T / hw with hw = 2:
#   group 0: [[0.5, 0.5], [0.5, 1.0]], group 1: [[2.0, 0.0], [0.0, 4.5]]
# signed sqrt, then the squared norm is 0.5*3 + 1 + 2 + 4.5 = 9, norm 3.
HAND_POOLED = torch.tensor([
    math.sqrt(0.5), math.sqrt(0.5), math.sqrt(0.5), 1.0,
    math.sqrt(2.0), 0.0, 0.0, math.sqrt(4.5)
]) / 3.0


@pytest.mark.parametrize('in_channels, reduced, groups, expected', [
    (2048, 512, 16, 16384),
    (512, 64, 4, 1024),
    (256, 32, 8, 128),
    (8, 6, 3, 12),
])
def test_out_channels_and_output_shape(in_channels, reduced, groups, expected):
    torch.manual_seed(0)
    neck = PAFBilinearNeck(in_channels, reduced_channels=reduced,
                           num_groups=groups)
    assert neck.out_channels == expected
    feats = (torch.rand(2, 16, 8, 8), torch.rand(2, in_channels, 3, 2))
    (pooled, ) = neck(feats, torch.rand(2, 1, 24, 16))
    assert pooled.shape == (2, expected)
    assert torch.allclose(pooled.norm(dim=1), torch.ones(2), atol=1e-5)


def test_registry_defaults():
    neck = MODELS.build(dict(type='PAFBilinearNeck', in_channels=2048))
    assert neck.out_channels == 512**2 // 16 == 16384
    assert neck.use_attention and neck.filter_mode == 'highlight'
    assert neck.grouping_loss_weight == 1.0


def test_group_bilinear_pool_by_hand():
    features = HAND_FEATURES.reshape(1, 4, 1, 2)
    pooled = group_bilinear_pool(features, num_groups=2)
    assert pooled.shape == (1, 8)
    assert torch.allclose(pooled[0], HAND_POOLED, atol=1e-6)


def test_group_bilinear_pool_signed_sqrt_of_negative_entries():
    # One channel pair [1, -2] at one position: bilinear [1, -2, -2, 4],
    # signed sqrt [1, -sqrt2, -sqrt2, 2], norm sqrt(1 + 2 + 2 + 4) = 3.
    features = torch.tensor([1., -2.]).reshape(1, 2, 1, 1)
    pooled = group_bilinear_pool(features, num_groups=1)
    expected = torch.tensor([1., -math.sqrt(2.), -math.sqrt(2.), 2.]) / 3.
    assert torch.allclose(pooled[0], expected, atol=1e-6)


def test_neck_pooling_by_hand_with_identity_projection():
    neck = identity_projection_neck(4, num_groups=2)
    features = HAND_FEATURES.reshape(1, 4, 1, 2)
    (pooled, ) = neck((features, ))
    assert torch.allclose(pooled[0], HAND_POOLED, atol=1e-6)


def test_grouping_loss_perfect_and_anti_grouped():
    # Groups (c0, c1) and (c2, c3) over two positions.
    grouped = torch.tensor([[1., 0.], [3., 0.], [0., 2.], [0., 1.]])
    anti_grouped = torch.tensor([[1., 0.], [0., 1.], [1., 0.], [0., 1.]])
    # grouped: intra correlations 1, inter 0 -> 1 + 0 - 1 = 0 (minimum).
    # anti: intra 0; inter pairs (0,2), (1,3) are 1, (0,3), (1,2) are 0
    # -> 1 + 0.5 - 0 = 1.5.
    loss_grouped = semantic_grouping_loss(grouped.reshape(1, 4, 1, 2), 2)
    loss_anti = semantic_grouping_loss(anti_grouped.reshape(1, 4, 1, 2), 2)
    assert loss_grouped.item() == pytest.approx(0.0, abs=1e-6)
    assert loss_anti.item() == pytest.approx(1.5, abs=1e-6)

    # The same numbers come out of the neck's forward, times the weight.
    neck = identity_projection_neck(4, num_groups=2, grouping_loss_weight=0.5)
    (pooled, ), loss = neck((anti_grouped.reshape(1, 4, 1, 2), ),
                            return_grouping_loss=True)
    assert loss.item() == pytest.approx(0.75, abs=1e-6)
    assert pooled.shape == (1, 8)
    (_, ), loss = neck((grouped.reshape(1, 4, 1, 2), ),
                       return_grouping_loss=True)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_grouping_loss_batch_mean_and_gradient():
    grouped = torch.tensor([[1., 0.], [3., 0.], [0., 2.], [0., 1.]])
    anti_grouped = torch.tensor([[1., 0.], [0., 1.], [1., 0.], [0., 1.]])
    batch = torch.stack([grouped, anti_grouped]).reshape(2, 4, 1, 2)
    batch.requires_grad_(True)
    loss = semantic_grouping_loss(batch, 2)
    assert loss.item() == pytest.approx(0.75, abs=1e-6)
    loss.backward()
    assert torch.isfinite(batch.grad).all()


def test_resize_mask_area_and_upsampling():
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 0, 0] = 1.0
    # Each 2x2 cell averages its four pixels: one of four is set.
    assert torch.equal(resize_mask(mask, (2, 2)),
                       torch.tensor([[[[0.25, 0.], [0., 0.]]]]))
    coarse = torch.ones(1, 1, 2, 2)
    assert torch.equal(resize_mask(coarse, (4, 4)), torch.ones(1, 1, 4, 4))


def test_attention_filter_zero_and_one_masks():
    torch.manual_seed(0)
    neck = PAFBilinearNeck(8, reduced_channels=8, num_groups=2)
    features = torch.rand(2, 8, 4, 4) + 0.1
    zeros = torch.zeros(2, 1, 32, 32)
    ones = torch.ones(2, 1, 32, 32)

    # A zero mask gives zero attention: the features are untouched.
    assert torch.equal(neck.filter_features(features, zeros), features)
    # A full mask gives A in (0, 1): every feature is scaled by 1 + A.
    filtered = neck.filter_features(features, ones)
    ratio = filtered / features
    attention = neck.part_attention(ones, (4, 4))
    assert torch.allclose(ratio, (1 + attention).expand_as(ratio), atol=1e-6)
    assert (ratio > 1).all() and (ratio < 2).all()

    (pooled_none, ) = neck((features, ))
    (pooled_zeros, ) = neck((features, ), zeros)
    (pooled_ones, ) = neck((features, ), ones)
    assert torch.equal(pooled_zeros, pooled_none)
    assert not torch.allclose(pooled_ones, pooled_none)
    assert torch.isfinite(pooled_ones).all()


def test_attention_is_zero_outside_the_mask_and_gate_mode_erases():
    torch.manual_seed(0)
    neck = PAFBilinearNeck(8, reduced_channels=8, num_groups=2,
                           filter_mode='gate')
    features = torch.rand(1, 8, 4, 4) + 0.1
    left_half = torch.zeros(1, 1, 16, 16)
    left_half[..., :8] = 1.0
    attention = neck.part_attention(left_half, (4, 4))
    assert torch.equal(attention[..., 2:], torch.zeros(1, 1, 4, 2))
    assert (attention[..., :2] > 0).all()
    filtered = neck.filter_features(features, left_half)
    assert torch.equal(filtered[..., 2:], torch.zeros(1, 8, 4, 2))


def test_mask_resolutions_and_gradient_reach_attention():
    torch.manual_seed(0)
    neck = PAFBilinearNeck(8, reduced_channels=8, num_groups=4)
    features = torch.rand(2, 8, 6, 6)
    for mask_size in [(6, 6), (48, 48), (30, 17), (3, 3)]:
        mask = torch.rand(2, 1, *mask_size)
        (pooled, ), loss = neck((features, ), mask, return_grouping_loss=True)
        assert pooled.shape == (2, 16)
        assert torch.isfinite(pooled).all() and torch.isfinite(loss)
    (pooled, ), loss = neck((features, ), torch.rand(2, 1, 48, 48),
                            return_grouping_loss=True)
    (pooled.sum() + loss).backward()
    assert neck.attention[0].weight.grad.abs().sum() > 0


def test_use_attention_false_ignores_mask():
    torch.manual_seed(0)
    neck = PAFBilinearNeck(8, reduced_channels=8, num_groups=2,
                           use_attention=False)
    assert not hasattr(neck, 'attention')
    features = torch.rand(1, 8, 4, 4)
    (with_mask, ) = neck((features, ), torch.ones(1, 1, 8, 8))
    (without, ) = neck((features, ))
    assert torch.equal(with_mask, without)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='num_groups=5 must divide'):
        PAFBilinearNeck(8, reduced_channels=8, num_groups=5)
    with pytest.raises(ValueError, match='filter_mode'):
        PAFBilinearNeck(8, filter_mode='multiply')
    with pytest.raises(ValueError, match='in_channels must be a positive int'):
        PAFBilinearNeck(0)
    neck = PAFBilinearNeck(8, reduced_channels=8, num_groups=2)
    with pytest.raises(ValueError, match=r'shape \(B, 8, h, w\)'):
        neck((torch.rand(1, 4, 4, 4), ))
    with pytest.raises(ValueError, match='saliency_mask must have shape'):
        neck((torch.rand(2, 8, 4, 4), ), torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match='saliency_mask must have shape'):
        neck((torch.rand(2, 8, 4, 4), ), torch.rand(3, 1, 4, 4))


def test_output_scale_multiplies_the_unit_norm_vector():
    torch.manual_seed(0)
    plain = MODELS.build(dict(type='PAFBilinearNeck', in_channels=8, reduced_channels=4,
                              num_groups=2))
    scaled = MODELS.build(dict(type='PAFBilinearNeck', in_channels=8, reduced_channels=4,
                               num_groups=2, output_scale=16.0))
    scaled.load_state_dict(plain.state_dict())
    feats = torch.randn(3, 8, 5, 5)
    plain_out, = plain((feats, ))
    scaled_out, = scaled((feats, ))
    assert plain_out.shape == (3, 8)
    torch.testing.assert_close(plain_out.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(scaled_out, 16.0 * plain_out)
    with pytest.raises(ValueError, match='output_scale must be > 0, got 0'):
        MODELS.build(dict(type='PAFBilinearNeck', in_channels=8, output_scale=0))
