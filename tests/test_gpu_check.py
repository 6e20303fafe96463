"""tools/misc/gpu_check.py, the GPU check, as a dry run on the CPU: every mode
trains, the DDP mode with activation checkpointing included."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

from conftest import REPO_ROOT, config_path


def load_gpu_check():
    spec = importlib.util.spec_from_file_location(
        'gpu_check', osp.join(REPO_ROOT, 'tools', 'misc', 'gpu_check.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_mode_trains_on_the_cpu(tmp_path, capsys):
    gpu_check = load_gpu_check()
    out = tmp_path / 'gpu_check.json'
    master_env = {name: os.environ.get(name) for name in ('MASTER_ADDR', 'MASTER_PORT')}
    results = gpu_check.main([
        '--device', 'cpu', '--config', config_path('daf_r18_synthetic.py'), '--size', '64',
        '--batch', '2', '--steps', '1', '--modes', 'fp32', 'amp_cp_ddp',
        '--out', str(out)])
    assert list(results) == ['fp32', 'amp_cp_ddp']
    for mode, result in results.items():
        assert 'error' not in result, result
        assert result['ok'], result
        assert result['steps'] == 2 and result['updates'] == 2 and result['skipped_steps'] == 0
        assert result['nonfinite_grads'] == [] and result['params_without_grad'] == []
        assert result['with_cp'] is (mode != 'fp32')
        assert result['peak_mem_mib'] is None  # no CUDA allocator on the CPU
    assert results['amp_cp_ddp']['ddp'] and results['amp_cp_ddp']['amp']
    assert results['fp32']['step_s_vs_fp32'] == 1.0
    assert results['amp_cp_ddp']['step_s_vs_fp32'] > 0
    printed = capsys.readouterr().out
    assert 'amp_cp_ddp   yes' in printed
    assert out.is_file()
    # the one-process group of the DDP mode leaves the environment as it was
    assert {name: os.environ.get(name) for name in master_env} == master_env


def test_the_shell_script_stops_without_a_gpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES='')
    result = subprocess.run(['bash', 'tools/misc/gpu_check.sh', str(tmp_path / 'out')],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=120)
    assert result.returncode == 1
    assert 'gpu_check.sh: torch sees no GPU' in result.stdout
