"""Scale the gradient that flows back through a tensor, forward unchanged."""
import torch
from torch import Tensor


class _ScaleGradient(torch.autograd.Function):

    @staticmethod
    def forward(ctx, tensor: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def scale_gradient(tensor: Tensor, scale: float) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by ``scale``.

    Used where one loss should train what comes after ``tensor`` at full
    strength but what comes before it only a little, e.g. the part images'
    losses train the student head fully and the student backbone at
    ``scale``.

    Args:
        tensor (Tensor): Any shape.
        scale (float): Gradient factor, >= 0. 1 returns ``tensor`` itself;
            0 returns ``tensor.detach()`` (no graph kept behind it).

    Returns:
        Tensor: Same shape, dtype and values as ``tensor``.
    """
    if scale < 0:
        raise ValueError(f'scale must be >= 0, got {scale}')
    if scale == 1:
        return tensor
    if scale == 0:
        return tensor.detach()
    return _ScaleGradient.apply(tensor, float(scale))
