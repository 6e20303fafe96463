"""Make mmpretrain backbones' activation checkpointing non-reentrant.

mmpretrain's blocks (ResNet, ConvNeXt, Swin, ViT's relatives...) checkpoint
themselves with ``cp.checkpoint(_inner_forward, x)``, ``cp`` being the module
``torch.utils.checkpoint``, without ``use_reentrant``: torch then uses the
*reentrant* variant. A reentrant checkpoint runs its own backward pass for
each checkpointed call, so a parameter used by two calls in one step reaches
DistributedDataParallel's reducer twice, and DDP fails in backward with
"Expected to mark a variable ready only once". DAF-net's student backbone runs
on the images and again on the part images in every step.

The non-reentrant variant (``use_reentrant=False``) records the recomputation
in the normal autograd graph: each parameter's gradient is accumulated once
per step, as without checkpointing, and DDP accepts it.
"""
import functools
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import torch.utils.checkpoint as torch_checkpoint


@contextmanager
def non_reentrant_checkpointing() -> Iterator[None]:
    """Inside the context, ``torch.utils.checkpoint.checkpoint`` calls that do
    not pass ``use_reentrant`` run with ``use_reentrant=False``.

    It swaps the attribute ``torch.utils.checkpoint.checkpoint`` for the
    duration of the context, so it reaches every caller that looks the
    function up on the module at call time, as mmpretrain's blocks do
    (``cp.checkpoint(...)``); code that imported the function itself
    (``from torch.utils.checkpoint import checkpoint``) is not changed. An
    explicit ``use_reentrant`` is respected.

    Only the forward needs the context: a non-reentrant checkpoint keeps the
    function it recomputes in backward. The swap is process-wide while the
    context is open (eager mode; not meant for threads that run other
    checkpointed code at the same time).

    Yields:
        None
    """
    original = torch_checkpoint.checkpoint

    @functools.wraps(original)
    def checkpoint(function: Optional[Callable] = None, *args: Any,
                   use_reentrant: Optional[bool] = None, **kwargs: Any) -> Any:
        if use_reentrant is None:
            use_reentrant = False
        return original(function, *args, use_reentrant=use_reentrant, **kwargs)

    torch_checkpoint.checkpoint = checkpoint
    try:
        yield
    finally:
        torch_checkpoint.checkpoint = original
