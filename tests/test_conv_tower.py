"""The conv tower of SPPNHead's score and regression branches."""
import torch
import torch.nn as nn

from mmdaf.models.utils.conv_tower import conv_tower


def test_conv_tower_layers_and_their_state_dict_names():
    tower = conv_tower(6, 8, 2, norm_groups=4)
    assert [type(layer) for layer in tower] == [nn.Conv2d, nn.GroupNorm, nn.ReLU,
                                                nn.Conv2d, nn.GroupNorm, nn.ReLU]
    assert tower[0].in_channels == 6 and tower[3].in_channels == 8
    assert tower[0].kernel_size == (3, 3) and tower[0].padding == (1, 1)
    assert list(tower.state_dict()) == ['0.weight', '0.bias', '1.weight', '1.bias',
                                        '3.weight', '3.bias', '4.weight', '4.bias']
    assert tower(torch.randn(2, 6, 5, 7)).shape == (2, 8, 5, 7)
    plain = conv_tower(6, 8, 1)
    assert [type(layer) for layer in plain] == [nn.Conv2d, nn.ReLU]


def test_conv_tower_without_convs_is_the_identity():
    feat = torch.randn(1, 3, 4, 4)
    tower = conv_tower(3, 8, 0)
    assert len(tower) == 0 and torch.equal(tower(feat), feat)


def test_kernel_size_is_padded_to_keep_the_size():
    tower = conv_tower(3, 4, 2, kernel_size=1)
    convs = [layer for layer in tower if isinstance(layer, torch.nn.Conv2d)]
    assert [conv.kernel_size for conv in convs] == [(1, 1), (1, 1)]
    assert [conv.padding for conv in convs] == [(0, 0), (0, 0)]
    assert tower(torch.randn(1, 3, 5, 7)).shape == (1, 4, 5, 7)
    five = conv_tower(3, 4, 1, kernel_size=5)
    assert five[0].padding == (2, 2) and five(torch.randn(1, 3, 5, 7)).shape == (1, 4, 5, 7)
