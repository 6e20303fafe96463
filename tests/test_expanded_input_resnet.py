
import pytest
import torch
from mmpretrain.models.backbones import ResNet
from mmpretrain.registry import MODELS

from mmdaf.models.backbones.expanded_input_resnet import (
    ExpandedInputResNet,
    expand_input_conv_weight,
)


def save_resnet18(path, **kwargs):
    torch.manual_seed(0)
    model = ResNet(depth=18, **kwargs)
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(state_dict, path)
    return state_dict


def test_expand_input_conv_weight():
    weight = torch.randn(4, 3, 7, 7)
    expanded = expand_input_conv_weight(weight, 5)
    assert expanded.shape == (4, 5, 7, 7)
    assert torch.equal(expanded[:, :3], weight)
    assert torch.equal(expanded[:, 3:], torch.zeros(4, 2, 7, 7))
    assert torch.equal(expand_input_conv_weight(weight, 3), weight)
    with pytest.raises(ValueError, match='in_channels=2 is smaller'):
        expand_input_conv_weight(weight, 2)


def test_loads_three_channel_checkpoint(tmp_path, log_messages):
    path = tmp_path / 'resnet18_rgb.pth'
    saved = save_resnet18(path)
    model = MODELS.build(
        dict(
            type='ExpandedInputResNet',
            depth=18,
            init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    assert model.conv1.weight.shape == (64, 5, 7, 7)
    model.init_weights()

    conv1 = model.conv1.weight.detach()
    assert torch.equal(conv1[:, :3], saved['conv1.weight'])
    assert torch.equal(conv1[:, 3:], torch.zeros(64, 2, 7, 7))
    loaded = model.state_dict()
    assert set(loaded) == set(saved)
    for key, value in saved.items():
        if key != 'conv1.weight':
            assert torch.equal(loaded[key], value), key

    expansion_logs = [m for m in log_messages if 'expanded checkpoint weight' in m]
    assert len(expansion_logs) == 1
    assert '"conv1.weight"' in expansion_logs[0]
    assert '(64, 3, 7, 7)' in expansion_logs[0]
    assert '(64, 5, 7, 7)' in expansion_logs[0]

    # Zero extra channels: the 5-channel net on [img, *, *] equals the
    # pretrained 3-channel net on img.
    reference = ResNet(depth=18)
    reference.load_state_dict(saved)
    reference.eval()
    model.eval()
    img = torch.randn(1, 3, 32, 32)
    extra = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        expected = reference(img)[0]
        actual = model(torch.cat([img, extra], dim=1))[0]
    assert torch.allclose(actual, expected, atol=1e-5)


def test_prefix_state_dict_wrapper_and_deep_stem(tmp_path, log_messages):
    torch.manual_seed(0)
    source = ResNet(depth=18, deep_stem=True)
    saved = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    saved['head.fc.weight'] = torch.zeros(3, 512)
    path = tmp_path / 'classifier.pth'
    torch.save({'state_dict': saved, 'meta': {'epoch': 3}}, path)

    model = ExpandedInputResNet(
        depth=18,
        deep_stem=True,
        init_cfg=dict(type='Pretrained', checkpoint=str(path),
                      prefix='backbone'))
    model.init_weights()
    stem_weight = model.stem[0].conv.weight.detach()
    assert torch.equal(stem_weight[:, :3],
                       saved['backbone.stem.0.conv.weight'])
    assert torch.equal(stem_weight[:, 3:], torch.zeros(32, 2, 3, 3))
    assert torch.equal(model.layer4[1].conv2.weight,
                       saved['backbone.layer4.1.conv2.weight'])
    assert any('expanded checkpoint weight' in m and '"stem.0.conv.weight"' in m
               and '(32, 3, 3, 3)' in m for m in log_messages)


def test_five_channel_checkpoint_loads_unchanged(tmp_path, log_messages):
    torch.manual_seed(0)
    source = ExpandedInputResNet(depth=18)
    path = tmp_path / 'teacher.pth'
    torch.save(source.state_dict(), path)

    model = ExpandedInputResNet(
        depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not any('expanded checkpoint' in m for m in log_messages)


def test_unexpected_keys_are_logged_and_default_init_kept(tmp_path,
                                                          log_messages):
    path = tmp_path / 'with_fc.pth'
    saved = save_resnet18(path)
    saved['fc.weight'] = torch.zeros(10, 512)
    torch.save(saved, path)
    model = ExpandedInputResNet(
        depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert any('not used by the model' in m and 'fc.weight' in m
               for m in log_messages)

    # Without a Pretrained init_cfg the mmpretrain ResNet init applies
    # (zero_init_residual: last BN of each block starts at zero).
    plain = ExpandedInputResNet(depth=18)
    plain.init_weights()
    assert torch.equal(plain.layer1[0].bn2.weight, torch.zeros(64))


def test_incompatible_first_conv_raises(tmp_path):
    path = tmp_path / 'seven.pth'
    torch.manual_seed(0)
    torch.save(ResNet(depth=18, in_channels=7).state_dict(), path)
    model = ExpandedInputResNet(
        depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match='in_channels=5 is smaller'):
        model.init_weights()
