"""Keep the part images out of the student's BatchNorm statistics.

The student backbone runs twice per training step: on the B clean images and
on the B*N part images (blurred, noised). In plain train mode the second pass
normalises the part images with their own batch statistics and mixes them into
the running statistics used at test time, so about half of those come from
images that test time never sees. The helpers below let the part pass instead
normalise with the statistics of the clean batch, without touching the running
statistics (:func:`clean_stats_context`).
"""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm


def batch_norm_layers(module: nn.Module) -> List[Tuple[str, _BatchNorm]]:
    """(name, layer) of every BatchNorm layer in ``module``."""
    return [(name, layer) for name, layer in module.named_modules()
            if isinstance(layer, _BatchNorm)]


def channel_mean_and_variance(feat: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of an (N, C, ...) tensor.

    Two passes of sums (the mean, then the squared deviations): on CPU
    ``Tensor.var`` over all dimensions but the channels is about 8x slower,
    and the one-pass ``E[x^2] - E[x]^2`` loses precision when the mean is
    large against the spread.

    Args:
        feat (Tensor): (N, C, ...) features.

    Returns:
        Tuple[Tensor, Tensor]: (C, ) mean and (C, ) variance.
    """
    dims = [d for d in range(feat.dim()) if d != 1]
    count = feat.numel() // feat.shape[1]
    mean = feat.sum(dim=dims) / count
    centred = feat - mean.view(1, -1, *([1] * (feat.dim() - 2)))
    return mean, centred.square().sum(dim=dims) / count


@contextmanager
def record_batch_norm_stats(module: nn.Module) -> Iterator[Dict[str, Tuple[Tensor, Tensor]]]:
    """Record the batch mean and (biased) variance each BatchNorm layer sees.

    Inside the context every forward of a BatchNorm layer of ``module`` stores
    the per-channel mean and variance of its input, detached, in the yielded
    dict under the layer's name (the last forward wins).

    Yields:
        dict: layer name -> ((C,) mean, (C,) variance).
    """
    stats: Dict[str, Tuple[Tensor, Tensor]] = {}
    handles = []

    def make_hook(name: str):
        def hook(layer: _BatchNorm, args) -> None:
            # In float32 (or the buffers' dtype): under autocast the input may
            # be bf16/fp16, and eval-mode batch_norm wants the statistics in
            # the dtype of the layer's parameters.
            dtype = layer.running_mean.dtype if layer.running_mean is not None \
                else torch.float32
            stats[name] = channel_mean_and_variance(args[0].detach().to(dtype))
        return hook

    for name, layer in batch_norm_layers(module):
        handles.append(layer.register_forward_pre_hook(make_hook(name)))
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def normalise_with_fixed_stats(module: nn.Module,
                               stats: Dict[str, Tuple[Tensor, Tensor]] = None
                               ) -> Iterator[None]:
    """Run ``module``'s BatchNorm layers in eval mode inside the context.

    Eval-mode BatchNorm normalises with its running statistics and leaves them
    unchanged. With ``stats`` (from :func:`record_batch_norm_stats`) those are
    swapped in for the running statistics during the context, so a second
    batch is normalised exactly like the recorded one. The buffers are
    swapped by reference, never written in place, so the autograd graph of an
    earlier pass stays valid. Everything is restored on exit.

    Args:
        module (nn.Module): the network, e.g. the student backbone.
        stats (dict, optional): layer name -> (mean, variance); a layer missing
            from it keeps its running statistics.
    """
    saved = []
    for name, layer in batch_norm_layers(module):
        saved.append((layer, layer.training, layer.running_mean, layer.running_var))
        if stats is not None and name in stats and layer.track_running_stats:
            layer.running_mean, layer.running_var = stats[name]
        layer.training = False
    try:
        yield
    finally:
        for layer, training, running_mean, running_var in saved:
            layer.training = training
            if layer.track_running_stats:
                layer.running_mean, layer.running_var = running_mean, running_var


@contextmanager
def without_activation_checkpointing(module: nn.Module) -> Iterator[None]:
    """Turn off ``with_cp`` on every block of ``module`` inside the context.

    Checkpointed blocks re-run their forward during backward, after the
    context that fixed the BatchNorm statistics has ended; the re-run would
    normalise with other statistics than the forward did (wrong gradients)
    and update the running statistics. The part pass therefore keeps its
    activations when it uses fixed statistics.
    """
    saved = [(layer, layer.with_cp) for layer in module.modules()
             if isinstance(getattr(layer, 'with_cp', None), bool)]
    for layer, _ in saved:
        layer.with_cp = False
    try:
        yield
    finally:
        for layer, with_cp in saved:
            layer.with_cp = with_cp


@contextmanager
def clean_stats_context(module: nn.Module,
                        clean_stats: Optional[Dict[str, Tuple[Tensor, Tensor]]]
                        ) -> Iterator[None]:
    """Normalise extra images (part images, windows) in training with the
    clean images' batch statistics, leaving the running statistics alone and
    turning off activation checkpointing (see the two contexts it combines).

    Args:
        module (nn.Module): the network, e.g. the student backbone.
        clean_stats (dict, optional): from :func:`record_batch_norm_stats`;
            None uses the running statistics.
    """
    with without_activation_checkpointing(module), \
            normalise_with_fixed_stats(module, clean_stats):
        yield
