"""Per-sample weights shared by the distillation losses."""
from typing import Optional

from torch import Tensor


def weighted_sample_mean(per_sample: Tensor, weight: Optional[Tensor]) -> Tensor:
    """Mean over the batch of per-sample losses, each times its weight.

    The weighted sum is divided by B (not by the sum of the weights), so a
    sample with weight 0 contributes nothing and the loss shrinks with the
    share of samples kept.

    Args:
        per_sample (Tensor): (B,) losses.
        weight (Tensor, optional): (B,) weights, detached here; None weighs
            every sample 1.

    Returns:
        Tensor: Scalar of ``per_sample``'s dtype.
    """
    if weight is None:
        return per_sample.mean()
    if weight.shape != per_sample.shape:
        raise ValueError(f'weight must have shape (B,) = {tuple(per_sample.shape)}, '
                         f'got {tuple(weight.shape)}')
    return (per_sample * weight.detach().to(per_sample)).mean()
