"""scale_gradient: identity forward, a scaled gradient backward."""
import pytest
import torch

from mmdaf.models.utils import scale_gradient


def test_scale_gradient_keeps_values_and_scales_the_gradient():
    values = torch.tensor([1.0, -2.0], requires_grad=True)
    scaled = scale_gradient(values, 0.25)
    assert torch.equal(scaled, values.detach())
    (3 * scaled).sum().backward()
    assert values.grad.tolist() == [0.75, 0.75]
    assert not scale_gradient(values, 0).requires_grad
    assert scale_gradient(values, 1) is values
    with pytest.raises(ValueError, match='scale must be >= 0, got -1'):
        scale_gradient(values, -1)


def test_scale_gradient_keeps_shape_and_dtype_and_reaches_earlier_layers():
    weight = torch.tensor(2.0, requires_grad=True)
    inputs = torch.ones(2, 3, dtype=torch.float64)
    hidden = scale_gradient(inputs * weight, 0.5)
    assert hidden.shape == (2, 3) and hidden.dtype == torch.float64
    hidden.sum().backward()
    # d(sum)/d(weight) = 6, halved.
    assert weight.grad.item() == 3.0
