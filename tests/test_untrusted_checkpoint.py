"""A checkpoint holding a pickled object outside the allow-list is refused with
a message naming the file, the object and the opt-in; --trust-checkpoint loads
it."""
import argparse
import json
import os.path as osp
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import CheckpointLoader, load_checkpoint
from mmpretrain.registry import MODELS
from test_train_resume import tiny_baseline_cfg

from mmdaf.utils import register_checkpoint_loader
from mmdaf.utils.checkpoint import load_from_local, load_from_local_trusted


def save_with_namespace(model, path) -> None:
    """What many training scripts do: store their argparse arguments."""
    meta = dict(args=argparse.Namespace(lr=0.1), epoch=np.int64(3))
    torch.save(dict(state_dict=model.state_dict(), meta=meta), path)


def test_mmdaf_loader_is_the_local_loader():
    assert CheckpointLoader._get_checkpoint_loader('/some/file.pth') is load_from_local
    assert CheckpointLoader._get_checkpoint_loader('https://x/y.pth') is not \
        load_from_local


def test_unlisted_global_is_refused_with_file_global_and_flag(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = str(tmp_path / 'with_args.pth')
    save_with_namespace(model, path)
    with pytest.raises(pickle.UnpicklingError) as info:
        load_checkpoint(torch.nn.Linear(3, 2), path)
    message = str(info.value)
    assert message.startswith(f'{path}: refusing to load this checkpoint: it holds '
                              'pickled objects outside the allow-list')
    assert ': argparse.Namespace. Unpickling them can run arbitrary code.' in message
    assert 'rerun with --trust-checkpoint' in message


def test_trusted_loading_is_explicit(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = str(tmp_path / 'with_args.pth')
    save_with_namespace(model, path)
    target = torch.nn.Linear(3, 2)
    register_checkpoint_loader(trust_checkpoint=True)
    try:
        assert CheckpointLoader._get_checkpoint_loader(path) is load_from_local_trusted
        checkpoint = load_checkpoint(target, path)
    finally:
        register_checkpoint_loader()
    assert checkpoint['meta']['args'].lr == 0.1
    assert torch.equal(target.weight, model.weight)
    with pytest.raises(pickle.UnpicklingError):  # the default is back
        load_checkpoint(target, path)


def run_test_tool(*args):
    return subprocess.run([sys.executable, 'tools/test.py', *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=180)


def test_tools_test_trust_checkpoint_flag(tiny_cub_root, tmp_path):
    cfg = tiny_baseline_cfg(tiny_cub_root, str(tmp_path / 'work'), max_iters=1)
    config = str(tmp_path / 'tiny_cfg.py')
    cfg.dump(config)
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    checkpoint = str(tmp_path / 'with_args.pth')
    save_with_namespace(model, checkpoint)

    trusted = run_test_tool(config, checkpoint, '--work-dir', str(tmp_path / 'b'),
                            '--trust-checkpoint')
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    output = trusted.stdout + trusted.stderr
    assert 'local checkpoints load with weights_only=False' in output
    assert f'Loads checkpoint by local_trusted backend from path: {checkpoint}' in output
    metrics = json.loads(trusted.stdout.strip().splitlines()[-1])
    assert set(metrics) == {'accuracy/top1'}
    assert osp.isdir(str(tmp_path / 'b'))
