"""DilatedConvNeXt: ConvNeXt with per-stage downsample strides and depthwise
dilations (the synthetic ConvNeXt twin's last stage at stride 16)."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import ConvNeXt

from mmdaf.models.backbones import DilatedConvNeXt

ARCH = dict(depths=[1, 1, 2, 1], channels=[8, 16, 32, 64])


def build_pair(**kwargs):
    torch.manual_seed(0)
    reference = ConvNeXt(arch=ARCH, out_indices=(1, 2, 3), gap_before_final_norm=False)
    ours = DilatedConvNeXt(arch=ARCH, out_indices=(1, 2, 3), gap_before_final_norm=False,
                           **kwargs)
    ours.load_state_dict(reference.state_dict())
    for model in (reference, ours):
        model.eval()  # (mmpretrain's ConvNeXt.train returns None)
    return reference, ours


def test_defaults_are_convnext():
    reference, ours = build_pair()
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for out, ref in zip(ours(img), reference(img)):
            assert torch.equal(out, ref)


def test_last_stage_at_stride_16_with_the_same_weights():
    reference, ours = build_pair(downsample_strides=(2, 2, 1), dilations=(1, 1, 1, 2))
    with torch.no_grad():
        feats = ours(torch.randn(1, 3, 64, 64))
        ref_feats = reference(torch.randn(1, 3, 64, 64))
    # 64 px: strides 8, 16, 16 (ConvNeXt: 8, 16, 32).
    assert [tuple(f.shape) for f in feats] == [(1, 16, 8, 8), (1, 32, 4, 4), (1, 64, 4, 4)]
    assert [tuple(f.shape) for f in ref_feats] == [(1, 16, 8, 8), (1, 32, 4, 4), (1, 64, 2, 2)]
    down = ours.downsample_layers[3][1]
    assert (down.stride, down.padding, down.kernel_size) == ((1, 1), 'same', (2, 2))
    assert down.weight is ours.downsample_layers[3][1].weight
    depthwise = ours.stages[3][0].depthwise_conv
    assert (depthwise.stride, depthwise.dilation, depthwise.kernel_size) == \
        ((1, 1), (2, 2), (7, 7))
    assert ours.stages[2][0].depthwise_conv.dilation == (1, 1)  # other stages unchanged
    for key, value in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_stride_one_downsample_pads_bottom_and_right():
    _, ours = build_pair(downsample_strides=(2, 2, 1), dilations=(1, 1, 1, 2))
    down = ours.downsample_layers[3][1]
    x = torch.randn(1, 32, 4, 4)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), down.weight, down.bias)
    with torch.no_grad():
        assert torch.allclose(down(x), expected, atol=1e-6)
    # Dilation 2, 7x7: taps 2 apart, padding 6 on every side.
    depthwise = ours.stages[3][0].depthwise_conv
    expected = F.conv2d(F.pad(torch.ones(1, 64, 4, 4), (6, 6, 6, 6)), depthwise.weight,
                        depthwise.bias, dilation=2, groups=64)
    with torch.no_grad():
        assert torch.allclose(depthwise(torch.ones(1, 64, 4, 4)), expected, atol=1e-6)


@pytest.mark.parametrize('kwargs, message', [
    (dict(downsample_strides=(2, 2)),
     r'downsample_strides must be 3 values of 1 or 2, got \(2, 2\)'),
    (dict(downsample_strides=(2, 3, 2)), 'downsample_strides must be 3 values of 1 or 2'),
    (dict(dilations=(1, 1, 0, 1)), r'dilations must be 4 values >= 1, got \(1, 1, 0, 1\)'),
])
def test_bad_geometry_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DilatedConvNeXt(arch=ARCH, **kwargs)
