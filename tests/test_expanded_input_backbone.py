"""5-channel input for any mmpretrain backbone: finding the input convolution,
widening it, and loading 3-channel checkpoints with zeros in the extra
channels (ExpandedInputBackbone; ExpandedInputResNet shares the functions).

Tiny ConvNeXt, Swin, ViT archs and a ResNet-18 on 32 px inputs."""

import pytest
import torch
import torch.nn as nn
from mmpretrain.registry import MODELS

from mmdaf.models.backbones import ExpandedInputBackbone, ExpandedInputResNet
from mmdaf.models.utils.input_conv import find_input_conv, widen_input_conv

CONVNEXT = dict(type='ConvNeXt', arch=dict(depths=[1, 1], channels=[8, 16]),
                out_indices=(0, 1), gap_before_final_norm=False)
SWIN = dict(type='SwinTransformer', arch=dict(embed_dims=8, depths=[1, 1], num_heads=[2, 2]),
            img_size=32, window_size=4, out_indices=(0, 1), drop_path_rate=0.0,
            pad_small_map=True)
VIT = dict(type='VisionTransformer',
           arch=dict(embed_dims=16, num_layers=1, num_heads=2, feedforward_channels=32),
           img_size=32, patch_size=8)
RESNET = dict(type='ResNet', depth=18, out_indices=(2, 3))
# name -> (config, input convolution, its weight shape with 3 inputs)
BACKBONES = {
    'convnext': (CONVNEXT, 'downsample_layers.0.0', (8, 3, 4, 4)),
    'swin': (SWIN, 'patch_embed.projection', (8, 3, 4, 4)),
    'resnet': (RESNET, 'conv1', (64, 3, 7, 7)),
}


class TwoConvs(nn.Module):
    """No known name; the input convolution is the first with 3 inputs."""

    def __init__(self):
        super().__init__()
        self.mask_conv = nn.Conv2d(1, 4, 1)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 1))


class NoRGBConv(nn.Module):

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.conv = nn.Conv2d(4, 4, 1)


@pytest.mark.parametrize('cfg, expected', [
    (CONVNEXT, 'downsample_layers.0.0'),
    (SWIN, 'patch_embed.projection'),
    (VIT, 'patch_embed.projection'),
    (RESNET, 'conv1'),
    (dict(RESNET, deep_stem=True), 'stem.0.conv'),
])
def test_find_input_conv_of_mmpretrain_backbones(cfg, expected):
    torch.manual_seed(0)
    backbone = MODELS.build(cfg)
    name, conv = find_input_conv(backbone)
    assert name == expected
    assert conv is backbone.get_submodule(expected)


def test_find_input_conv_falls_back_to_first_rgb_conv_and_names_the_type():
    module = TwoConvs()
    assert find_input_conv(module) == ('body.0', module.body[0])
    with pytest.raises(ValueError, match='NoRGBConv has no nn.Conv2d with 3 input channels'):
        find_input_conv(NoRGBConv())
    with pytest.raises(ValueError, match=r'^ExpandedInputBackbone: NoRGBConv has no nn.Conv2d'):
        ExpandedInputBackbone(backbone=dict(type=NoRGBConv))


def test_widen_input_conv_keeps_the_old_weights_and_adds_zeros():
    module = TwoConvs()
    old = module.body[0]
    assert widen_input_conv(module, 5) == 'body.0'
    new = module.body[0]
    assert new is not old and type(new) is nn.Conv2d
    assert (new.in_channels, new.out_channels, new.kernel_size) == (5, 4, (3, 3))
    assert torch.equal(new.weight[:, :3], old.weight)
    assert torch.equal(new.weight[:, 3:], torch.zeros(4, 2, 3, 3))
    assert torch.equal(new.bias, old.bias)
    assert module.body[1].in_channels == 3  # only the first is widened
    assert new(torch.randn(1, 5, 8, 8)).shape == (1, 4, 6, 6)


def save_classifier_checkpoint(path, cfg: dict) -> dict:
    """An mmpretrain classifier checkpoint (``backbone.*``, ``head.*``) of
    the 3-channel backbone, with random non-default values."""
    torch.manual_seed(0)
    source = MODELS.build(cfg)
    state_dict = {}
    for key, value in source.state_dict().items():
        if key.endswith('running_var'):
            value = torch.rand_like(value) + 0.5
        elif value.is_floating_point():
            value = torch.randn_like(value) * 0.1
        state_dict[f'backbone.{key}'] = value
    state_dict['head.fc.weight'] = torch.zeros(10, 16)
    torch.save({'state_dict': state_dict, 'meta': {}}, path)
    return {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}


@pytest.mark.parametrize('name', list(BACKBONES))
def test_loads_three_channel_checkpoint_widened_with_zeros(name, tmp_path, log_messages):
    cfg, conv_name, shape = BACKBONES[name]
    path = tmp_path / f'{name}.pth'
    saved = save_classifier_checkpoint(path, cfg)
    model = ExpandedInputBackbone(
        backbone=cfg, in_channels=5,
        init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone'))
    assert model.input_conv_name == conv_name
    # The wrapped backbone never sees the Pretrained init (its own loading
    # would fail on the input convolution's shape).
    assert 'Pretrained' not in str(model.backbone.init_cfg)
    model.init_weights()

    key = f'{conv_name}.weight'
    wide = model.backbone.state_dict()[key]
    assert tuple(saved[key].shape) == shape
    assert tuple(wide.shape) == (shape[0], 5) + shape[2:]
    assert torch.equal(wide[:, :3], saved[key])
    assert torch.equal(wide[:, 3:], torch.zeros((shape[0], 2) + shape[2:]))
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(saved)
    for other, value in saved.items():
        if other != key:
            assert torch.equal(loaded[other], value), other
    expansions = [m for m in log_messages if 'expanded checkpoint weight' in m]
    assert len(expansions) == 1
    assert f'"{key}"' in expansions[0]
    assert str(shape) in expansions[0] and str((shape[0], 5) + shape[2:]) in expansions[0]
    assert expansions[0].startswith(f'ExpandedInputBackbone({type(model.backbone).__name__})')
    assert not any('not used by the model' in m for m in log_messages)  # prefix: no head

    # Zero extra channels: the 5-channel net on [img, *, *] is the pretrained
    # 3-channel net on img.
    reference = MODELS.build(cfg)
    reference.load_state_dict(saved)
    reference.eval()
    model.eval()
    img, extra = torch.randn(1, 3, 32, 32), torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        expected = reference(img)
        actual = model(torch.cat([img, extra], dim=1))
    assert len(actual) == len(expected) == 2
    for out, ref in zip(actual, expected):
        assert out.shape == ref.shape
        assert torch.allclose(out, ref, atol=1e-5)


def test_pretrained_in_the_wrapped_config_is_taken_over(tmp_path):
    path = tmp_path / 'convnext.pth'
    saved = save_classifier_checkpoint(path, CONVNEXT)
    init_cfg = dict(type='Pretrained', checkpoint=str(path), prefix='backbone')
    model = ExpandedInputBackbone(backbone=dict(CONVNEXT, init_cfg=init_cfg))
    assert model.pretrained_cfg == init_cfg
    # ConvNeXt's own default init is kept for the wrapped backbone.
    assert [c['type'] for c in model.backbone.init_cfg] == ['TruncNormal', 'Constant']
    model.init_weights()
    weight = model.backbone.downsample_layers[0][0].weight
    assert torch.equal(weight[:, :3], saved['downsample_layers.0.0.weight'])
    assert not weight[:, 3:].any()


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match='build the wrapped ConvNeXt with 3 input channels'):
        ExpandedInputBackbone(backbone=dict(CONVNEXT, in_channels=5))
    with pytest.raises(ValueError, match='in_channels must be at least 3, got 2'):
        ExpandedInputBackbone(backbone=CONVNEXT, in_channels=2)
    init_cfg = dict(type='Pretrained', checkpoint='x.pth')
    with pytest.raises(ValueError, match='init_cfg is set both'):
        ExpandedInputBackbone(backbone=dict(CONVNEXT, init_cfg=init_cfg), init_cfg=init_cfg)


def test_without_pretrained_the_wrapped_backbone_init_applies():
    torch.manual_seed(0)
    model = ExpandedInputBackbone(backbone=CONVNEXT)
    model.init_weights()
    # ConvNeXt's TruncNormal(std 0.02) reaches the widened convolution too.
    weight = model.backbone.downsample_layers[0][0].weight
    assert weight.shape == (8, 5, 4, 4)
    assert 0.005 < weight.std().item() < 0.04
    assert not model.backbone.downsample_layers[0][0].bias.any()


def test_expanded_input_resnet_is_the_resnet_case():
    """ExpandedInputResNet finds its stem with the same function."""
    assert ExpandedInputResNet(depth=18).first_conv_key == 'conv1.weight'
    assert ExpandedInputResNet(depth=18, deep_stem=True).first_conv_key == \
        'stem.0.conv.weight'
