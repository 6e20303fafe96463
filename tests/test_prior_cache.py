"""The geometry cache behind SPPNHead's anchors and candidate cells."""
import torch

from mmdaf.models.utils.prior_cache import cached_build, prior_key


def test_prior_key_normalises_sizes_and_device():
    key = prior_key([torch.Size([8, 9]), (4, 5)], torch.float32, 'cpu')
    assert key == (((8, 9), (4, 5)), torch.float32, torch.device('cpu'))
    assert hash(key) == hash(prior_key([(8, 9), (4, 5)], torch.float32,
                                       torch.device('cpu')))
    assert key != prior_key([(8, 9), (4, 5)], torch.float64, 'cpu')


def test_cached_build_builds_once_per_key_and_drops_the_oldest():
    cache, calls = {}, []

    def build(value):
        calls.append(value)
        return torch.full((2, ), float(value))

    first = cached_build(cache, 'a', lambda: build(1), max_size=2)
    assert cached_build(cache, 'a', lambda: build(99), max_size=2) is first
    cached_build(cache, 'b', lambda: build(2), max_size=2)
    cached_build(cache, 'c', lambda: build(3), max_size=2)
    assert calls == [1, 2, 3] and list(cache) == ['b', 'c']
    # None is an entry like any other.
    assert cached_build(cache, 'none', lambda: None, max_size=3) is None
    assert 'none' in cache


def test_cached_build_builds_outside_autograd_and_inference_mode():
    weight = torch.ones(3, requires_grad=True)
    cache = {}
    with torch.inference_mode():
        value = cached_build(cache, 'w', lambda: weight * 2, max_size=4)
    assert not value.requires_grad and not value.is_inference()
