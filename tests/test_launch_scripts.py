"""tools/dist_*.sh and tools/slurm_*.sh find the interpreter that has mmdaf.

In a shell where ``python`` has no torch (a fresh shell after ``make demo``),
with PYTHON unset and no environment activated, the scripts use the
repository's ``.venv``; an explicit PYTHON or an activated environment wins.
Each test copies tools/ into a scratch repository (mmdaf and configs are
links to this one) with its own ``.venv/bin/python``."""
import os
import os.path as osp
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, config_path

from mmdaf.datasets import make_synthetic_fgvc

TIMEOUT_S = 300
# Interpreter variables a user's shell may carry; the tests set their own.
ENV_VARIABLES = ('PYTHON', 'VIRTUAL_ENV', 'CONDA_PREFIX', 'CONDA_DEFAULT_ENV',
                 'PYTHONHOME', 'PYTHONPATH')


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def write_script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/bin/sh\n' + body)
    path.chmod(0o755)
    return path


def python_without_torch(path: Path) -> Path:
    """A real python that cannot import torch: -S skips site-packages."""
    return write_script(path, f'exec "{sys.executable}" -S "$@"\n')


def recording_python(path: Path) -> Path:
    """A stand-in interpreter: the scripts' torch check (-c ...) passes, every
    other call is written to $CALL_LOG instead of running."""
    return write_script(path, 'if [ "$1" = "-c" ]; then exit 0; fi\n'
                        f'echo "{path} $*" >> "$CALL_LOG"\n')


def scratch_repo(tmp_path: Path, venv_python: str) -> Path:
    """tools/ copied, mmdaf/ and configs/ linked, .venv/bin/python of the
    given kind: 'real' (this interpreter), 'recording', or 'none'."""
    repo = tmp_path / 'repo'
    shutil.copytree(osp.join(REPO_ROOT, 'tools'), repo / 'tools')
    for name in ('mmdaf', 'configs'):
        (repo / name).symlink_to(osp.join(REPO_ROOT, name))
    python = repo / '.venv' / 'bin' / 'python'
    if venv_python == 'real':
        write_script(python, f'exec "{sys.executable}" "$@"\n')
    elif venv_python == 'recording':
        recording_python(python)
    return repo


def plain_shell_env(tmp_path: Path, **extra: str) -> dict:
    """No PYTHON, no activated environment; python and python3 on PATH have no
    torch; srun is a recorder."""
    fake_bin = tmp_path / 'bin'
    for name in ('python', 'python3'):
        python_without_torch(fake_bin / name)
    write_script(fake_bin / 'srun', 'echo "srun $*" >> "$CALL_LOG"\n')
    env = {key: value for key, value in os.environ.items() if key not in ENV_VARIABLES}
    env.update(PATH=f'{fake_bin}:/usr/bin:/bin', CALL_LOG=str(tmp_path / 'calls.log'),
               CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1', **extra)
    return env


def run(command, repo: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=repo, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S)


def test_the_path_python_has_no_torch(tmp_path):
    """The setting the other tests rely on: what `python` is in that shell."""
    env = plain_shell_env(tmp_path)
    result = run(['python', '-c', 'import torch'], tmp_path, env)
    assert result.returncode == 1
    assert "No module named 'torch'" in result.stdout


def test_dist_train_uses_the_repository_venv_and_trains_with_cp(tmp_path):
    """bash tools/dist_train.sh CONFIG 2, typed in a plain shell: the complete
    R18 DAF with activation checkpointing in both backbones trains two
    iterations on 2 processes."""
    repo = scratch_repo(tmp_path, 'real')
    data_root = str(tmp_path / 'CUB_200_2011')
    make_synthetic_fgvc(data_root, num_classes=4, train_per_class=2, test_per_class=1,
                        img_size=32, seed=0, num_workers=1)
    options = [f'train_dataloader.dataset.data_root={data_root}',
               'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
               'train_dataloader.persistent_workers=False', 'train_cfg.max_epochs=1',
               'default_hooks.logger.interval=1', 'data_preprocessor.num_classes=4',
               'model.head.num_classes=4', 'model.teacher.head.num_classes=4',
               'model.fusion_head.num_classes=4', 'model.backbone.with_cp=True',
               'model.teacher.backbone.with_cp=True', 'model.backbone.init_cfg=None',
               'model.teacher.backbone.init_cfg=None']
    work_dir = tmp_path / 'work'
    env = plain_shell_env(tmp_path, PORT=str(free_port()))
    result = run(['bash', 'tools/dist_train.sh', config_path('daf_r18_synthetic.py'), '2',
                  '--no-validate', '--work-dir', str(work_dir), '--cfg-options', *options],
                 repo, env)
    log = result.stdout
    assert result.returncode == 0, log[-4000:]
    assert f'dist_train.sh: using {repo}/.venv/bin/python' in log
    assert 'Distributed training: True' in log
    assert "with_cp=True" in log  # the dumped config
    assert re.search(r'Epoch\(train\)\s+\[1\]\[2/2\]', log), log[-3000:]
    assert (work_dir / 'epoch_1.pth').is_file()


def test_explicit_python_wins_over_the_venv(tmp_path):
    repo = scratch_repo(tmp_path, 'recording')
    chosen = python_without_torch(tmp_path / 'mine' / 'python')
    env = plain_shell_env(tmp_path, PYTHON=str(chosen))
    result = run(['bash', 'tools/dist_train.sh', 'some_config.py', '2'], repo, env)
    assert result.returncode == 1
    assert f'dist_train.sh: {chosen} cannot import torch.' in result.stdout
    assert not (tmp_path / 'calls.log').exists()  # the .venv was not used


@pytest.mark.parametrize('variables', ['virtualenv', 'conda'])
def test_an_activated_environment_wins_over_the_venv(tmp_path, variables):
    repo = scratch_repo(tmp_path, 'recording')
    prefix = tmp_path / 'activated'
    python_without_torch(prefix / 'bin' / 'python')
    extra = (dict(VIRTUAL_ENV=str(prefix)) if variables == 'virtualenv' else
             dict(CONDA_PREFIX=str(prefix), CONDA_DEFAULT_ENV='mmdaf'))
    env = plain_shell_env(tmp_path, **extra)
    result = run(['bash', 'tools/dist_test.sh', 'c.py', 'ckpt.pth', '2'], repo, env)
    assert result.returncode == 1
    assert f'dist_test.sh: {prefix}/bin/python cannot import torch.' in result.stdout
    assert not (tmp_path / 'calls.log').exists()


def test_conda_base_does_not_hide_the_venv(tmp_path):
    """conda's base environment is active in many shells by default; the
    repository's .venv is still the interpreter then."""
    repo = scratch_repo(tmp_path, 'recording')
    prefix = tmp_path / 'conda'
    python_without_torch(prefix / 'bin' / 'python')
    env = plain_shell_env(tmp_path, CONDA_PREFIX=str(prefix), CONDA_DEFAULT_ENV='base')
    result = run(['bash', 'tools/dist_test.sh', 'c.py', 'ckpt.pth', '2'], repo, env)
    assert result.returncode == 0, result.stdout
    assert f'using {repo}/.venv/bin/python' in result.stdout


def test_every_script_runs_the_venv_python(tmp_path):
    repo = scratch_repo(tmp_path, 'recording')
    env = plain_shell_env(tmp_path)
    venv_python = f'{repo}/.venv/bin/python'
    commands = {
        'dist_train.sh': ['c.py', '2', '--amp'],
        'dist_test.sh': ['c.py', 'ckpt.pth', '2'],
        'slurm_train.sh': ['partition', 'job', 'c.py', 'work'],
        'slurm_test.sh': ['partition', 'job', 'c.py', 'ckpt.pth'],
    }
    for script, args in commands.items():
        result = run(['bash', f'tools/{script}', *args], repo, env)
        assert result.returncode == 0, result.stdout
        assert f'{script}: using {venv_python}' in result.stdout
    calls = (tmp_path / 'calls.log').read_text().splitlines()
    assert len(calls) == 4
    assert calls[0].startswith(f'{venv_python} -m torch.distributed.run ')
    assert calls[0].endswith('tools/train.py c.py --launcher pytorch --amp')
    assert calls[1].startswith(f'{venv_python} -m torch.distributed.run ')
    assert calls[1].endswith('tools/test.py c.py ckpt.pth --launcher pytorch')
    assert calls[2].startswith('srun -p partition --job-name=job ')
    assert calls[2].endswith(f'{venv_python} -u tools/train.py c.py --work-dir=work '
                             '--launcher slurm')
    assert calls[3].endswith(f'{venv_python} -u tools/test.py c.py ckpt.pth '
                             '--launcher slurm')


def test_without_a_venv_the_message_says_what_to_do(tmp_path):
    repo = scratch_repo(tmp_path, 'none')
    env = plain_shell_env(tmp_path)
    result = run(['bash', 'tools/dist_train.sh', 'c.py', '2'], repo, env)
    assert result.returncode == 1
    assert (f'dist_train.sh: {tmp_path}/bin/python cannot import torch. Run `make '
            f'install` (creates {repo}/.venv, used by default), activate the environment '
            'that has mmdaf installed, or set PYTHON=/path/to/python.') in result.stdout
