"""ResNet whose activation checkpointing works under DistributedDataParallel
when the backbone runs more than once per training step.

mmpretrain's ResNet blocks call ``torch.utils.checkpoint.checkpoint`` without
``use_reentrant``, i.e. torch's *reentrant* checkpointing. A reentrant
checkpoint runs its own backward pass for each checkpointed call, so the
gradient of a parameter that is used by two calls reaches DDP's reducer twice
in one step. DAF-net's student backbone runs on the images and again on the
B*N part images in the same step, so with ``with_cp=True`` under DDP every
rank fails in ``backward`` with "Expected to mark a variable ready only once".

Non-reentrant checkpointing (``use_reentrant=False``) records the
recomputation in the normal autograd graph: each parameter's gradient is
accumulated once per step, as without checkpointing, and DDP works with or
without ``find_unused_parameters`` and ``static_graph``.
"""
from typing import Any

import torch.nn as nn
from mmpretrain.models.backbones import ResNet
from mmpretrain.models.backbones.resnet import ResLayer
from mmpretrain.registry import MODELS
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..utils.cpu_max_pool import with_cpu_channels_last_max_pool


class NonReentrantCPResLayer(ResLayer):
    """mmpretrain ``ResLayer`` that checkpoints each block without reentrancy.

    The blocks are built with ``with_cp=False`` (so they never call the
    reentrant checkpoint themselves); when ``with_cp`` is True and the input
    requires grad, each whole block (its residual branch, the sum and the
    final ReLU) runs inside ``checkpoint(block, x, use_reentrant=False)``:
    only the block's input is kept, the rest is recomputed in backward. The
    module tree, and so the state-dict keys, are those of ``ResLayer``.

    Args:
        with_cp (bool): Checkpoint every block. Defaults to False.
        **kwargs: ``ResLayer`` arguments (block, num_blocks, in_channels,
            out_channels, stride, ... and the block's own arguments).
    """

    def __init__(self, with_cp: bool = False, **kwargs: Any) -> None:
        super().__init__(with_cp=False, **kwargs)
        self.with_cp = with_cp

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        for block in self:
            # Same condition as mmpretrain's blocks: nothing to save memory
            # for when no gradient flows (eval, no_grad, frozen stages).
            if self.with_cp and x.requires_grad:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


@MODELS.register_module()
class NonReentrantCPResNet(ResNet):
    """mmpretrain ``ResNet`` with non-reentrant activation checkpointing.

    Identical to ``ResNet`` (same arguments, modules, state-dict keys,
    outputs and gradients) except for ``with_cp=True``: the blocks are then
    checkpointed by :class:`NonReentrantCPResLayer` with
    ``use_reentrant=False``, which DistributedDataParallel accepts for a
    backbone that runs several times in one step (DAF-net's student: images,
    then part images). Use it in place of ``ResNet`` wherever ``with_cp`` may
    be switched on.

    Note: as with any checkpointing of BatchNorm layers, the recomputation in
    backward updates the BN running statistics a second time.

    Args:
        depth (int): ResNet depth, one of 18, 34, 50, 101, 152.
        cpu_channels_last_max_pool (bool): run the stem's max pool in
            channels-last memory on the CPU
            (:class:`~mmdaf.models.utils.cpu_max_pool.CPUChannelsLastMaxPool2d`):
            bit-identical outputs, 5x faster there; no effect on a GPU.
            Defaults to True.
        **kwargs: Other ``mmpretrain.models.ResNet`` arguments, ``with_cp``
            included.
    """

    def __init__(self, depth: int, cpu_channels_last_max_pool: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(depth, **kwargs)
        if cpu_channels_last_max_pool and isinstance(self.maxpool, nn.MaxPool2d):
            self.maxpool = with_cpu_channels_last_max_pool(self.maxpool)

    def make_res_layer(self, **kwargs: Any) -> nn.Module:
        """Build one stage as a :class:`NonReentrantCPResLayer`."""
        return NonReentrantCPResLayer(**kwargs)
