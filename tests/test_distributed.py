"""tools/dist_train.sh and tools/dist_test.sh with 2 CPU processes (gloo).

Each config trains one epoch on the tiny set (24 train images, batch 2 per
process: 6 iterations per rank when the data is split over 2 ranks, 12 if it
were not). The baseline checkpoint is then evaluated by 2 processes and by 1,
which must print the same metrics and the same per-image scores. The DAF run
checks its distributed validation against the gathered per-image scores.
"""
import json
import os
import os.path as osp
import pickle
import re
import socket
import subprocess
import sys
from typing import Dict, List

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
from conftest import REPO_ROOT, config_path
from mmengine.config import Config
from mmengine.registry import MODEL_WRAPPERS

from mmdaf.engine import close_distributed, setup_cpu_distributed

TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# What torchrun or gloo print when the port they were given was taken between
# free_port() closing its socket and the launcher binding it: a race of the
# test harness, not of the code under test, so the command gets one more try.
PORT_TAKEN = ('Address already in use', 'EADDRINUSE')


def start_tool(command: List[str]) -> subprocess.Popen:
    # CPU processes even where a GPU is visible: that path is under test.
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable,
               CUDA_VISIBLE_DEVICES='')
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish_tool(process: subprocess.Popen, others: List[subprocess.Popen]) -> str:
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        for other in others:
            other.kill()
        raise
    return output


def run_tools(*commands: List[str]) -> List[str]:
    """Run tools side by side from the repository root (each on its own free
    port); return each one's stdout + stderr. A command that failed only
    because its port was taken is run once more on another port."""
    processes = [start_tool(command) for command in commands]
    outputs = []
    for command, process in zip(commands, processes):
        output = finish_tool(process, processes)
        if process.returncode != 0 and any(text in output for text in PORT_TAKEN):
            process = start_tool(command)
            output = finish_tool(process, [process])
        assert process.returncode == 0, output[-4000:]
        outputs.append(output)
    return outputs


def last_json_line(output: str) -> Dict[str, float]:
    for line in reversed(output.splitlines()):
        if line.startswith('{'):
            return json.loads(line)
    raise AssertionError(f'no JSON line in the output:\n{output[-2000:]}')


def tiny_options(data_root: str) -> List[str]:
    options = ['data_preprocessor.num_classes=4', 'train_cfg.max_epochs=1',
               'train_cfg.val_interval=1', 'default_hooks.logger.interval=1',
               'randomness.seed=0']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [f'{loader}.dataset.data_root={data_root}', f'{loader}.batch_size=2',
                    f'{loader}.num_workers=0', f'{loader}.persistent_workers=False']
    return options


def write_daf_config(tmp_path, val_dump: str) -> str:
    """The complete DAF r18 with 4 classes; validation reports StreamAccuracy
    and dumps the per-image predictions to ``val_dump``."""
    path = tmp_path / 'daf_r18_4cls.py'
    path.write_text(
        f"_base_ = [{config_path('daf_r18_synthetic.py')!r}]\n"
        "model = dict(head=dict(num_classes=4), backbone=dict(init_cfg=None),\n"
        "             teacher=dict(head=dict(num_classes=4), backbone=dict(init_cfg=None)),\n"
        "             fusion_head=dict(num_classes=4))\n"
        "val_evaluator = [dict(type='Accuracy', topk=(1, )),\n"
        "                 dict(type='StreamAccuracy'),\n"
        f"                 dict(type='DumpResults', out_file_path={val_dump!r})]\n")
    return str(path)


def load_samples(path: str) -> Dict[int, dict]:
    """The per-image predictions dumped by ``test.py --out``, by sample index."""
    with open(path, 'rb') as file:
        samples = pickle.load(file)
    return {int(sample['sample_idx']): sample for sample in samples}


def train_two_processes(config: str, options: List[str], work_dir: str) -> str:
    """dist_train.sh with 2 processes for one epoch; checks the split, returns
    the log."""
    train_log, = run_tools(['bash', 'tools/dist_train.sh', config, '2', '--work-dir',
                            work_dir, '--cfg-options', *options])
    assert 'Distributed launcher: pytorch' in train_log
    assert 'Distributed training: True' in train_log
    assert re.search(r'GPU number: 2\b', train_log)
    assert "type='CPUDistributedDataParallel'" in train_log  # the dumped config
    # 24 images / (2 ranks x batch 2) = 6 iterations per epoch
    assert re.search(r'Epoch\(train\)\s+\[1\]\[6/6\]', train_log), train_log[-3000:]
    assert not re.search(r'\[\s*7/', train_log)
    # validation after the epoch ran distributed too: 8 images / (2 x 2)
    assert re.search(r'Epoch\(val\)\s+\[1\]\[2/2\]', train_log)
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    return train_log


def test_baseline_two_process_train_then_test_matches_one_process(tiny_cub_root,
                                                                  tmp_path):
    config = config_path('ablation', 'r18_baseline_synthetic.py')
    options = tiny_options(tiny_cub_root) + ['model.head.num_classes=4',
                                             'model.backbone.init_cfg=None']
    work_dir = str(tmp_path / 'work')
    train_two_processes(config, options, work_dir)
    checkpoint = osp.join(work_dir, 'epoch_1.pth')

    dist_out = str(tmp_path / 'dist.pkl')
    single_out = str(tmp_path / 'single.pkl')
    dist_log, single_log = run_tools(
        ['bash', 'tools/dist_test.sh', config, checkpoint, '2', '--work-dir',
         str(tmp_path / 'dist_test'), '--out', dist_out, '--cfg-options', *options],
        [sys.executable, 'tools/test.py', config, checkpoint, '--work-dir',
         str(tmp_path / 'single_test'), '--out', single_out, '--cfg-options', *options])
    assert 'Distributed training: True' in dist_log

    dist_metrics, single_metrics = last_json_line(dist_log), last_json_line(single_log)
    assert set(dist_metrics) == {'accuracy/top1'}
    assert dist_metrics == single_metrics
    # top-1 over 8 images is a multiple of 12.5 %
    assert dist_metrics['accuracy/top1'] % 12.5 == 0

    dist_samples, single_samples = load_samples(dist_out), load_samples(single_out)
    assert sorted(dist_samples) == list(range(8))  # both ranks' halves gathered
    for index, sample in single_samples.items():
        np.testing.assert_allclose(dist_samples[index]['pred_score'],
                                   sample['pred_score'], atol=1e-5)


def top1(samples: Dict[int, dict], key: str) -> float:
    hits = [int(np.asarray(sample[key]).argmax()) == int(sample['gt_label'][0])
            for sample in samples.values()]
    return 100.0 * sum(hits) / len(hits)


def test_daf_two_process_train_with_stream_accuracy_in_val(tiny_cub_root, tmp_path):
    """DAF's many sub-networks under CPU DDP (an unused parameter would fail the
    second iteration), and StreamAccuracy gathered over both ranks during the
    distributed validation: the logged numbers must match the per-image scores
    that DumpResults gathered in the same validation."""
    val_dump = str(tmp_path / 'val.pkl')
    config = write_daf_config(tmp_path, val_dump)
    train_log = train_two_processes(config, tiny_options(tiny_cub_root),
                                    str(tmp_path / 'work'))
    val_line = re.findall(r'Epoch\(val\)\s+\[1\]\[2/2\]\s+accuracy.*', train_log)[-1]
    metrics = {key: float(value) for key, value in
               re.findall(r'(accuracy\S*/top1): ([0-9.]+)', val_line)}
    assert set(metrics) == {'accuracy/top1', 'accuracy_student/top1',
                            'accuracy_teacher/top1'}

    samples = load_samples(val_dump)
    assert sorted(samples) == list(range(8))  # both ranks' halves gathered
    assert metrics['accuracy/top1'] == pytest.approx(top1(samples, 'pred_score'))
    assert metrics['accuracy_student/top1'] == pytest.approx(
        top1(samples, 'student_score'))
    assert metrics['accuracy_teacher/top1'] == pytest.approx(
        top1(samples, 'teacher_score'))


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU path only runs without CUDA')
def test_setup_cpu_distributed_sets_gloo_and_the_cpu_wrapper(monkeypatch):
    cfg = Config(dict(launcher='none', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    assert setup_cpu_distributed(cfg) is False
    assert 'model_wrapper_cfg' not in cfg and cfg.env_cfg.dist_cfg.backend == 'nccl'

    cfg.launcher = 'pytorch'
    cfg.find_unused_parameters = True
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', bucket_cap_mb=5)
    for name, value in dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0',
                            MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(name, value)
    try:
        assert setup_cpu_distributed(cfg) is True
        assert torch_dist.get_backend() == 'gloo'
        assert cfg.env_cfg.dist_cfg.backend == 'gloo'
        assert cfg.model_wrapper_cfg == dict(
            type='CPUDistributedDataParallel', bucket_cap_mb=5,
            broadcast_buffers=False, find_unused_parameters=True)
        # what Runner.wrap_model does: device_ids=[LOCAL_RANK] as a default arg
        layer = torch.nn.Linear(3, 2)
        wrapped = MODEL_WRAPPERS.build(cfg.model_wrapper_cfg,
                                       default_args=dict(module=layer, device_ids=[0]))
        assert wrapped.device_ids is None
        wrapped(torch.ones(4, 3)).sum().backward()
        assert torch.equal(layer.weight.grad, torch.full((2, 3), 4.0))
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()

    cfg.model_wrapper_cfg = dict(type='MMFullyShardedDataParallel')
    with pytest.raises(ValueError, match='only plain DDP model wrappers'):
        setup_cpu_distributed(cfg)
    cfg.launcher = 'torchrun'
    with pytest.raises(ValueError, match="cfg.launcher must be one of"):
        setup_cpu_distributed(cfg)


def test_close_distributed_destroys_the_group_once_and_then_does_nothing():
    torch_dist.init_process_group('gloo', rank=0, world_size=1,
                                  init_method=f'tcp://127.0.0.1:{free_port()}')
    try:
        assert torch_dist.is_initialized()
        close_distributed()
        assert not torch_dist.is_initialized()
        close_distributed()  # outside a distributed run: nothing to do
        assert not torch_dist.is_initialized()
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
