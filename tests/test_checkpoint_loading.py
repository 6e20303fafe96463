"""Checkpoints written by mmengine load on torch >= 2.6 (weights-only loading)."""
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.runner.checkpoint import load_checkpoint, save_checkpoint

import mmdaf  # noqa: F401  (installs the allow-list)


class Unlisted:
    """A class that is not on the allow-list."""


def test_checkpoint_with_numpy_meta_loads(tmp_path):
    model = nn.Linear(3, 2)
    path = str(tmp_path / 'ckpt.pth')
    meta = dict(seed=np.int64(7), ratio=np.float64(0.25), hist=np.arange(4),
                matrix=np.ones((2, 2), dtype=np.float32))
    save_checkpoint(dict(state_dict=model.state_dict(), meta=meta), path)

    target = nn.Linear(3, 2)
    checkpoint = load_checkpoint(target, path, map_location='cpu')

    assert torch.equal(target.weight, model.weight)
    assert checkpoint['meta']['seed'] == 7
    assert checkpoint['meta']['ratio'] == 0.25
    np.testing.assert_array_equal(checkpoint['meta']['hist'], np.arange(4))
    assert checkpoint['meta']['matrix'].dtype == np.float32


def test_unlisted_object_is_still_refused(tmp_path):
    path = str(tmp_path / 'evil.pth')
    torch.save(dict(state_dict={}, meta=dict(obj=Unlisted())), path)
    with pytest.raises(pickle.UnpicklingError, match='Unlisted'):
        torch.load(path)


def test_getattr_is_only_allowed_for_history_buffer_statistics(tmp_path):
    path = str(tmp_path / 'getattr.pth')
    # What a hostile pickle would do: getattr on an allowed class to reach code.
    torch.save(dict(meta=np.ndarray.tofile), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
