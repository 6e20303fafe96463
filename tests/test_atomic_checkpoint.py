"""SIGKILL of tools/train.py during a checkpoint write or between saves keeps
the previous checkpoint, and ``--resume`` continues from it."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import torch
from conftest import REPO_ROOT
from test_train_resume import tiny_baseline_cfg

TESTS_DIR = osp.dirname(osp.abspath(__file__))
WAIT_S = 180


def write_config(data_root, tmp_path, hook_type='AtomicCheckpointHook',
                 extra_hooks=(), name='tiny_cfg.py') -> str:
    cfg = tiny_baseline_cfg(data_root, str(tmp_path / 'unused'), max_iters=6)
    cfg.default_hooks.checkpoint = dict(type=hook_type, interval=2, by_epoch=False,
                                        max_keep_ckpts=1)
    cfg.custom_imports = dict(imports=['mmdaf', 'reliability_plugin'],
                              allow_failed_imports=False)
    cfg.custom_hooks = list(cfg.custom_hooks) + list(extra_hooks)
    cfg.log_level = 'INFO'
    path = str(tmp_path / name)
    cfg.dump(path)
    return path


def train_env(stall_save=None) -> dict:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([TESTS_DIR, env.get('PYTHONPATH', '')])
    env.pop('MMDAF_TEST_STALL_SAVE', None)
    if stall_save:
        env['MMDAF_TEST_STALL_SAVE'] = stall_save
    return env


def train_until_marker_then_kill(config, work_dir, marker, log_path, stall_save=None,
                                 resume=False):
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(
            [sys.executable, 'tools/train.py', config, '--work-dir', work_dir] +
            (['--resume'] if resume else []),
            cwd=REPO_ROOT, env=train_env(stall_save), stdout=log,
            stderr=subprocess.STDOUT)
        deadline = time.time() + WAIT_S
        while not osp.exists(osp.join(work_dir, marker)):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                with open(log_path) as output:
                    raise AssertionError(f'no {marker}:\n{output.read()[-3000:]}')
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL


def resume(config, work_dir) -> str:
    completed = subprocess.run(
        [sys.executable, 'tools/train.py', config, '--work-dir', work_dir, '--resume'],
        cwd=REPO_ROOT, env=train_env(), capture_output=True, text=True, timeout=WAIT_S)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    return output


def load(path):
    return torch.load(path, map_location='cpu')  # weights-only, mmdaf allow-list


def last_checkpoint(work_dir) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as file:
        return file.read()


def checkpoint_files(work_dir):
    return sorted(name for name in os.listdir(work_dir) if '.pth' in name)


def test_kill_during_a_save_then_between_saves(tiny_cub_root, tmp_path):
    work_dir = str(tmp_path / 'work')
    config = write_config(tiny_cub_root, tmp_path)
    train_until_marker_then_kill(config, work_dir, 'SAVE_STALLED',
                                 str(tmp_path / 'killed1.log'), stall_save='iter_4.pth')

    # (a) killed half-way through writing iter_4: only its .partial exists, and
    # iter_2 (max_keep_ckpts=1) was not deleted before iter_4 was complete
    assert checkpoint_files(work_dir) == ['iter_2.pth', 'iter_4.pth.partial']
    partial_size = os.path.getsize(osp.join(work_dir, 'iter_4.pth.partial'))
    assert 0 < partial_size < 0.6 * os.path.getsize(osp.join(work_dir, 'iter_2.pth'))
    assert last_checkpoint(work_dir) == osp.join(work_dir, 'iter_2.pth')
    assert load(osp.join(work_dir, 'iter_2.pth'))['meta']['iter'] == 2

    # (b) --resume continues from iter_2; killed again between the saves of
    # iter_4 and iter_6 (before runner.iter 5)
    stalling = write_config(tiny_cub_root, tmp_path, name='stall_at_5.py', extra_hooks=[
        dict(type='StallAtIterHook', at_iter=5)])
    train_until_marker_then_kill(stalling, work_dir, 'ITER_STALLED',
                                 str(tmp_path / 'killed2.log'), resume=True)
    with open(str(tmp_path / 'killed2.log')) as file:
        output = file.read()
    assert f'Auto resumed from the latest checkpoint {work_dir}/iter_2.pth' in output
    assert 'resumed epoch: 0, iter: 2' in output
    assert 'removed iter_4.pth.partial, an unfinished save of an earlier run' in output
    assert 'Epoch(train) [1][3/6]' in output and '[1][2/6]' not in output
    assert checkpoint_files(work_dir) == ['iter_4.pth']
    assert last_checkpoint(work_dir) == osp.join(work_dir, 'iter_4.pth')

    output = resume(config, work_dir)
    assert 'resumed epoch: 0, iter: 4' in output
    assert 'Epoch(train) [1][5/6]' in output and '[1][4/6]' not in output
    assert checkpoint_files(work_dir) == ['iter_6.pth']
    assert last_checkpoint(work_dir) == osp.join(work_dir, 'iter_6.pth')
    assert load(osp.join(work_dir, 'iter_6.pth'))['meta']['iter'] == 6


def test_mmengine_checkpoint_hook_loses_everything_in_the_same_kill(tiny_cub_root,
                                                                     tmp_path):
    """Why the atomic hook exists: with mmengine's CheckpointHook and
    max_keep_ckpts=1 the same kill leaves only a truncated checkpoint."""
    config = write_config(tiny_cub_root, tmp_path, hook_type='CheckpointHook')
    work_dir = str(tmp_path / 'work')
    train_until_marker_then_kill(config, work_dir, 'SAVE_STALLED',
                                 str(tmp_path / 'killed.log'), stall_save='iter_4.pth')
    assert checkpoint_files(work_dir) == ['iter_4.pth']  # truncated, iter_2 deleted
    assert last_checkpoint(work_dir) == osp.join(work_dir, 'iter_2.pth')
