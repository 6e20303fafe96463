"""Timing and memory for ``benchmarks/speed.py``.

Runs are interleaved round by round (:func:`interleaved_times`) so that a
noisy, shared machine slows both sides of a ratio alike, and ratios are taken
round by round (:func:`median_ratio`). Peak memory is tensor memory: on CUDA
``torch.cuda.max_memory_allocated`` above the level at the start, on CPU the
same quantity from ``torch.profiler``'s allocation events.
"""
import os
import statistics
import sys
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Sequence

import torch

MEMORY_EVENT_NAME = '[memory]'
MIB = 1024.0**2


# ----------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------
def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA only; CPU runs synchronously)."""
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], None], device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_times(fns: Dict[str, Callable[[], None]], device: str, warmup: int,
                      repeats: int) -> Dict[str, List[float]]:
    """Run every function once per round, ``warmup`` + ``repeats`` rounds.

    Args:
        fns (dict): name -> function to time.
        device (str): the device the functions run on.
        warmup (int): untimed rounds first.
        repeats (int): timed rounds.

    Returns:
        dict: per name, the wall times of the last ``repeats`` rounds in round
        order, so that ratios can be taken round by round.
    """
    times = {name: [] for name in fns}
    for round_idx in range(warmup + repeats):
        for name, fn in fns.items():
            elapsed = _timed(fn, device)
            if round_idx >= warmup:
                times[name].append(elapsed)
    return times


def sum_rounds(times: Dict[str, List[float]], names: Sequence[str]) -> List[float]:
    """Round-by-round sum of the named timings."""
    return [sum(values) for values in zip(*(times[name] for name in names))]


def median_ratio(numerators: Sequence[float], denominators: Sequence[float],
                 scale: float = 1.0) -> float:
    """Median over rounds of ``numerator / (scale * denominator)``."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(f'need two equally long non-empty lists, got '
                         f'{len(numerators)} and {len(denominators)}')
    return statistics.median(n / (scale * d) for n, d in zip(numerators, denominators))


# ----------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------
def peak_from_memory_events(events: Sequence[tuple]) -> int:
    """Peak of the running sum of (time, signed bytes) allocation events.

    Events are sorted by time first; the running sum starts at 0, so the result
    is the most memory held at once above the level at the start (>= 0).
    """
    running = peak = 0
    for _, nbytes in sorted(events, key=lambda event: event[0]):
        running += nbytes
        peak = max(peak, running)
    return peak


def peak_memory_bytes(fn: Callable[[], None], device: str) -> int:
    """Most tensor memory held at once by ``fn`` above the level at its start."""
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return max(0, torch.cuda.max_memory_allocated() - base)
    from torch.profiler import ProfilerActivity, profile
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU],
                                  profile_memory=True) as prof:
        fn()
    events = [(event.start_ns(), event.nbytes())
              for event in prof.profiler.kineto_results.events()
              if event.name() == MEMORY_EVENT_NAME]
    return peak_from_memory_events(events)


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence kineto's start/stop lines on file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)
