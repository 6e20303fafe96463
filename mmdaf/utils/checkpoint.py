"""Safe checkpoint loading on torch >= 2.6.

torch.load defaults to ``weights_only=True`` since torch 2.6, and mmengine 0.10.7
calls it without arguments. Checkpoints written by mmengine's own Runner hold a
few non-tensor objects (numpy scalars and arrays in ``meta`` and in the message
hub's ``HistoryBuffer``), so resume and ``load_from`` fail with
``UnpicklingError: Weights only load failed``.

Instead of turning the safety off for every file, :func:`allow_checkpoint_globals`
adds exactly those classes to torch's allow-list. Anything else in a checkpoint
still fails to load.
"""
import logging
import os.path as osp
import pickle
import re
from typing import List

import numpy as np
import torch


def _numpy_globals() -> List[object]:
    """The numpy objects that pickled arrays, dtypes and scalars reference."""
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(name)) for name in (
        'bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32',
        'uint64', 'float16', 'float32', 'float64', 'str', 'object')]
    return [_reconstruct, scalar, np.ndarray, np.dtype] + dtype_classes


def _history_buffer_getattr(obj: object, name: str) -> object:
    """A ``getattr`` that only fetches HistoryBuffer's statistics methods.

    ``HistoryBuffer.__getstate__`` pickles its statistics methods as
    ``getattr(HistoryBuffer, 'mean')``. Allowing the real ``getattr`` would let a
    checkpoint walk from any allowed class to arbitrary code, so the pickled
    name ``builtins.getattr`` is bound to this function instead.
    """
    from mmengine.logging import HistoryBuffer
    if not HistoryBuffer._statistics_methods:
        # The class-level table is filled by the first HistoryBuffer(); in a
        # fresh process (tools/test.py) none exists yet while unpickling.
        HistoryBuffer()
    if obj is HistoryBuffer and name in HistoryBuffer._statistics_methods:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'checkpoint calls getattr({obj!r}, {name!r}); only the statistics '
        'methods of mmengine.logging.HistoryBuffer are allowed')


def _mmengine_globals() -> List[object]:
    """The mmengine objects a Runner checkpoint carries (message hub state)."""
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')]


def checkpoint_safe_globals() -> List[object]:
    """All globals mmdaf allows inside a checkpoint besides tensors."""
    return _numpy_globals() + _mmengine_globals()


def allow_checkpoint_globals() -> None:
    """Add :func:`checkpoint_safe_globals` to torch's weights-only allow-list.

    Idempotent; called when mmdaf is imported.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:  # torch < 2.4 has no weights-only default
        return
    add_safe_globals(checkpoint_safe_globals())


def _unsafe_globals_text(filename: str, error: Exception) -> str:
    """The pickled globals of ``filename`` outside the allow-list, as text."""
    get_unsafe = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint', None)
    names = []
    if get_unsafe is not None:
        try:
            allowed = {g[1] if isinstance(g, tuple) else
                       f'{g.__module__}.{g.__qualname__}'
                       for g in checkpoint_safe_globals()}
            names = [name for name in get_unsafe(filename) if name not in allowed]
        except Exception:  # a damaged file: fall back to torch's message
            names = []
    if not names:
        names = re.findall(r'GLOBAL ([\w.]+)', str(error))
    return ', '.join(sorted(set(names))) or f'(torch says: {error})'


def load_from_local(filename: str, map_location=None) -> dict:
    """mmengine's local checkpoint loader, weights-only, with a clear refusal.

    Loads with ``torch.load(..., weights_only=True)``: tensors, containers and
    the globals of :func:`checkpoint_safe_globals` only. A checkpoint holding
    any other pickled object raises ``pickle.UnpicklingError`` naming the
    file, the offending globals and how to opt in.

    Args:
        filename (str): local path (``~`` expanded).
        map_location: as for ``torch.load``.

    Returns:
        dict: the checkpoint.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(
            f'{filename}: refusing to load this checkpoint: it holds pickled '
            f'objects outside the allow-list of mmdaf.utils.checkpoint_safe_globals: '
            f'{_unsafe_globals_text(filename, error)}. Unpickling them can run '
            'arbitrary code. If you trust this file, rerun with --trust-checkpoint '
            '(tools/train.py, tools/test.py) or call '
            'mmdaf.utils.register_checkpoint_loader(trust_checkpoint=True); to '
            'allow only these classes, pass them to '
            'torch.serialization.add_safe_globals([...]).') from error


def load_from_local_trusted(filename: str, map_location=None) -> dict:
    """Local loader that unpickles anything (``weights_only=False``).

    Only for checkpoints from a trusted source: unpickling can run arbitrary
    code.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


def register_checkpoint_loader(trust_checkpoint: bool = False) -> None:
    """Make mmdaf's loader mmengine's loader for local paths (prefix '').

    Called with the default when mmdaf is imported: every ``load_from``,
    resume and ``init_cfg=dict(type='Pretrained', checkpoint=<local path>)``
    then goes through :func:`load_from_local`.

    Args:
        trust_checkpoint (bool): UNSAFE. Load every local checkpoint with
            ``weights_only=False`` (:func:`load_from_local_trusted`) for the
            rest of the process, e.g. for ``--trust-checkpoint``. Defaults to
            False.
    """
    from mmengine.logging import print_log
    from mmengine.runner.checkpoint import CheckpointLoader

    loader = load_from_local_trusted if trust_checkpoint else load_from_local
    CheckpointLoader.register_scheme(prefixes='', loader=loader, force=True)
    if trust_checkpoint:
        print_log('Checkpoints are trusted: local checkpoints load with '
                  'weights_only=False, which can run arbitrary code from the file',
                  logger='current', level=logging.WARNING)
