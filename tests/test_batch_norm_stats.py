"""The BatchNorm helpers of the part pass, on hand-made layers and inputs:
recording the clean batch's statistics, normalising other images with them,
activation checkpointing off meanwhile, and the context that combines them."""
import pytest
import torch
import torch.nn as nn
from mmpretrain.registry import MODELS

import mmdaf  # noqa: F401  (registers NonReentrantCPResNet)
from mmdaf.models.utils.batch_norm_stats import (
    batch_norm_layers,
    channel_mean_and_variance,
    clean_stats_context,
    normalise_with_fixed_stats,
    record_batch_norm_stats,
    without_activation_checkpointing,
)


def test_clean_statistics_normalise_the_part_images():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3).train()
    clean = torch.randn(4, 3, 5, 5) * 3 + 2
    parts = torch.randn(8, 3, 5, 5)
    with record_batch_norm_stats(bn) as stats:
        bn(clean)
    mean = clean.mean(dim=(0, 2, 3))
    var = clean.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(stats[''][0], mean)
    torch.testing.assert_close(stats[''][1], var)
    running_before = bn.running_mean.clone()
    with normalise_with_fixed_stats(bn, stats):
        out = bn(parts)
    expected = (parts - mean[None, :, None, None]) / torch.sqrt(
        var[None, :, None, None] + bn.eps)
    torch.testing.assert_close(out, expected)
    # Restored: train mode, the same running buffers, untouched by the part pass.
    assert bn.training
    torch.testing.assert_close(bn.running_mean, running_before)


def test_recording_keeps_the_last_forward_of_each_named_layer_and_removes_its_hooks():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.ReLU(), nn.BatchNorm2d(2))
    assert [name for name, _ in batch_norm_layers(net)] == ['1', '3']
    with record_batch_norm_stats(net) as stats:
        net(torch.randn(3, 1, 4, 4))
        second = torch.randn(2, 1, 4, 4) + 5
        net(second)
    assert sorted(stats) == ['1', '3']
    conv_out = net[0](second)
    torch.testing.assert_close(stats['1'][0], conv_out.mean(dim=(0, 2, 3)))
    assert not stats['1'][0].requires_grad
    # Outside the context nothing is recorded.
    net(torch.randn(2, 1, 4, 4))
    torch.testing.assert_close(stats['1'][0], conv_out.mean(dim=(0, 2, 3)))


def test_channel_mean_and_variance_by_hand_and_with_a_large_mean():
    torch.manual_seed(0)
    # Channel 0 holds 1, 2, 3, 4 (mean 2.5, variance 1.25), channel 1 all 7.
    feat = torch.tensor([[[[1., 2.]], [[7., 7.]]], [[[3., 4.]], [[7., 7.]]]])
    mean, var = channel_mean_and_variance(feat)
    assert mean.shape == (2, ) and var.dtype == torch.float32
    assert torch.equal(mean, torch.tensor([2.5, 7.0]))
    assert torch.equal(var, torch.tensor([1.25, 0.0]))
    # A mean of 1e4 against a spread of 1: E[x^2] - E[x]^2 would lose the
    # variance in float32, the two passes keep it.
    wide = torch.randn(4, 3, 6, 6, dtype=torch.float64) + 1e4
    mean, var = channel_mean_and_variance(wide.float())
    torch.testing.assert_close(var.double(), wide.var(dim=(0, 2, 3), unbiased=False),
                               rtol=1e-3, atol=0)


def _checkpointed_resnet():
    return MODELS.build(dict(type='NonReentrantCPResNet', depth=18, stem_channels=8,
                             base_channels=8, out_indices=(1, 2, 3), with_cp=True))


def test_activation_checkpointing_is_turned_off_and_back_on():
    backbone = _checkpointed_resnet()
    # Whichever modules do the checkpointing (the ResNet and its 4 stages).
    checkpointing = [m for m in backbone.modules() if getattr(m, 'with_cp', False)]
    assert len(checkpointing) == 5
    with without_activation_checkpointing(backbone):
        assert not any(getattr(m, 'with_cp', False) for m in backbone.modules())
    assert all(m.with_cp for m in checkpointing)


def test_clean_stats_context_combines_both_and_restores_everything():
    torch.manual_seed(0)
    backbone = _checkpointed_resnet()
    backbone.train()
    clean = torch.randn(2, 3, 64, 64) * 2 + 1  # C5 2 x 2: 8 values per channel
    with record_batch_norm_stats(backbone) as stats:
        with torch.no_grad():
            clean_out = backbone(clean)
    running = {name: buf.clone() for name, buf in backbone.named_buffers() if 'running' in name}
    layers = batch_norm_layers(backbone)
    checkpointing = [m for m in backbone.modules() if getattr(m, 'with_cp', False)]
    assert len(stats) == len(layers) == 20
    with clean_stats_context(backbone, stats):
        assert not any(layer.training for _, layer in layers)
        assert not any(getattr(m, 'with_cp', False) for m in backbone.modules())
        with torch.no_grad():
            # The clean images normalised with their own statistics: the
            # train-mode outputs again.
            again = backbone(clean)
    for out, expected in zip(again, clean_out):
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert all(layer.training for _, layer in layers)
    assert checkpointing and all(m.with_cp for m in checkpointing)
    for name, buf in backbone.named_buffers():
        if 'running' in name:
            assert torch.equal(buf, running[name]), name
    # Without statistics: the running ones, left as they are.
    with clean_stats_context(backbone, None), torch.no_grad():
        plain = backbone(clean)
    backbone.eval()
    with torch.no_grad():
        for out, expected in zip(plain, backbone(clean)):
            torch.testing.assert_close(out, expected)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_recorded_statistics_take_the_buffers_dtype(dtype):
    """Under autocast a BatchNorm layer may get a low-precision input; its
    statistics are recorded in float32, the dtype its buffers hold."""
    bn = nn.BatchNorm2d(2)
    low = (torch.randn(3, 2, 4, 4) * 2 + 3).to(dtype)
    with record_batch_norm_stats(bn) as stats:
        hooks = list(bn._forward_pre_hooks.values())
        assert len(hooks) == 1
        hooks[0](bn, (low, ))
    assert not bn._forward_pre_hooks  # removed on exit
    mean, var = stats['']
    assert mean.dtype == var.dtype == torch.float32
    expected_mean, expected_var = channel_mean_and_variance(low.float())
    torch.testing.assert_close(mean, expected_mean)
    torch.testing.assert_close(var, expected_var)
