"""A small cache of tensors that depend only on the input geometry.

Anchors and what follows from them alone (SPPNHead's candidate cells, its
fixed boxes) depend only on the feature-map and input sizes, dtype and
device; rebuilding them costs more than the head's post-processing
(benchmarks/speed.py).
"""
from typing import Callable, Dict, Hashable, Sequence, Tuple

import torch


def prior_key(featmap_sizes: Sequence[Tuple[int, int]], dtype: torch.dtype,
              device: torch.device) -> Tuple[Tuple[Tuple[int, int], ...], torch.dtype,
                                             torch.device]:
    """Hashable key of a set of anchors: level sizes, dtype, device.

    Args:
        featmap_sizes (Sequence[Tuple[int, int]]): (H_l, W_l) per level
            (``torch.Size`` works too).
        dtype (torch.dtype): dtype of the anchors.
        device (torch.device): device of the anchors (a string works too).

    Returns:
        tuple: ``(sizes, dtype, device)`` with ``sizes`` a tuple of int
        pairs and ``device`` a ``torch.device``.
    """
    sizes = tuple((int(size[0]), int(size[1])) for size in featmap_sizes)
    return sizes, dtype, torch.device(device)


def cached_build(cache: Dict[Hashable, object], key: Hashable,
                 build: Callable[[], object], max_size: int) -> object:
    """``build()``, computed once per key and kept in ``cache``.

    Built without autograd and outside inference mode, so that an entry
    made in an evaluation under ``torch.inference_mode`` still serves a
    later training step. The oldest entry goes when the cache holds
    ``max_size`` entries.

    Args:
        cache (Dict[Hashable, object]): the cache, a plain dict (insertion
            ordered); updated in place.
        key (Hashable): the entry's key.
        build (Callable[[], object]): makes the entry (a tensor, a tuple of
            tensors, None ...).
        max_size (int): the most entries kept, >= 1.

    Returns:
        object: the cached or newly built entry.
    """
    if key in cache:
        return cache[key]
    with torch.inference_mode(False), torch.no_grad():
        value = build()
    if len(cache) >= max_size:
        cache.pop(next(iter(cache)))
    cache[key] = value
    return value
