import pytest
import torch
import torch.nn as nn

from mmdaf.models.backbones.non_reentrant_cp_resnet import NonReentrantCPResNet
from mmdaf.models.utils.cpu_max_pool import (
    CPUChannelsLastMaxPool2d,
    with_cpu_channels_last_max_pool,
)


@pytest.mark.parametrize('shape', [(2, 3, 9, 11), (1, 4, 8, 8)])
def test_channels_last_pool_equals_max_pool_bit_for_bit_with_gradients(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    pool = CPUChannelsLastMaxPool2d(3, 2, 1)
    out = pool(x)
    expected = nn.MaxPool2d(3, 2, 1)(x_ref)
    assert out.shape == expected.shape and out.dtype == torch.float32
    assert torch.equal(out, expected)
    # Returned in the default layout, as nn.MaxPool2d returns it.
    assert out.is_contiguous()
    upstream = torch.randn_like(out)
    out.backward(upstream)
    expected.backward(upstream)
    assert torch.equal(x.grad, x_ref.grad)


def test_hand_computed_pool_of_a_4x4_map():
    x = torch.arange(16.).view(1, 1, 4, 4)
    # 2 x 2 windows, stride 2: the bottom-right corner of each window.
    assert CPUChannelsLastMaxPool2d(2, 2)(x).tolist() == [[[[5., 7.], [13., 15.]]]]


def test_copy_keeps_the_settings_of_the_pool():
    pool = with_cpu_channels_last_max_pool(nn.MaxPool2d(3, 2, 1, ceil_mode=True))
    assert isinstance(pool, CPUChannelsLastMaxPool2d)
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 1, True)


def test_resnet_uses_it_by_default_and_keeps_its_outputs_and_keys():
    torch.manual_seed(0)
    fast = NonReentrantCPResNet(depth=18, base_channels=8, stem_channels=8)
    plain = NonReentrantCPResNet(depth=18, base_channels=8, stem_channels=8,
                                 cpu_channels_last_max_pool=False)
    # mmpretrain's ResNet.train() returns None, so eval() is not chained.
    fast.eval()
    plain.eval()
    assert type(fast.maxpool) is CPUChannelsLastMaxPool2d
    assert type(plain.maxpool) is nn.MaxPool2d
    assert fast.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fast(x)[-1], plain(x)[-1])
