"""tools/dist_train.sh and tools/dist_test.sh with 2 CPU processes (gloo).

Each config trains one epoch on the tiny set (24 train images, batch 2 per
process: 6 iterations per rank when the data is split over 2 ranks, 12 if it
were not), then the checkpoint is evaluated by 2 processes and by 1; both must
print the same metrics and the same per-image scores.
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
from conftest import REPO_ROOT, config_path

TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_tool(command: List[str]) -> str:
    """Run a tool from the repository root; return its stdout (+ stderr)."""
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable)
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True,
                               text=True, timeout=TIMEOUT_S)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    return output


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


def write_daf_config(tmp_path) -> str:
    """The complete DAF r18 with 4 classes, StreamAccuracy in the evaluators."""
    path = tmp_path / 'daf_r18_4cls.py'
    path.write_text(
        f"_base_ = [{config_path('daf_r18_synthetic.py')!r}]\n"
        "model = dict(head=dict(num_classes=4),\n"
        "             teacher=dict(head=dict(num_classes=4)),\n"
        "             fusion_head=dict(num_classes=4))\n"
        "val_evaluator = [dict(type='Accuracy', topk=(1, )),\n"
        "                 dict(type='StreamAccuracy')]\n"
        "test_evaluator = val_evaluator\n")
    return str(path)


def load_scores(path: str) -> Dict[int, np.ndarray]:
    with open(path, 'rb') as file:
        samples = pickle.load(file)
    return {int(sample['sample_idx']): np.asarray(sample['pred_score'])
            for sample in samples}


@pytest.mark.parametrize('model', ['baseline', 'daf'])
def test_two_process_train_then_test_matches_one_process(model, tiny_cub_root,
                                                         tmp_path):
    options = tiny_options(tiny_cub_root)
    if model == 'baseline':
        config = config_path('ablation', 'r18_baseline_synthetic.py')
        options.append('model.head.num_classes=4')
        expected_keys = {'accuracy/top1'}
    else:
        config = write_daf_config(tmp_path)
        expected_keys = {'accuracy/top1', 'accuracy_student/top1',
                         'accuracy_teacher/top1'}
    work_dir = str(tmp_path / 'work')

    train_log = run_tool(['bash', 'tools/dist_train.sh', config, '2', '--work-dir',
                          work_dir, '--cfg-options', *options])
    assert 'Distributed launcher: pytorch' in train_log
    assert 'Distributed training: True' in train_log
    assert re.search(r'GPU number: 2\b', train_log)
    # 24 images / (2 ranks x batch 2) = 6 iterations per epoch
    assert re.search(r'Epoch\(train\)\s+\[1\]\[6/6\]', train_log), train_log[-3000:]
    assert not re.search(r'\[\s*7/', train_log)
    # validation after the epoch ran distributed too: 8 images / (2 x 2)
    assert re.search(r'Epoch\(val\)\s+\[1\]\[2/2\]', train_log)
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(checkpoint)

    test_options = ['--cfg-options', *options]
    dist_out = str(tmp_path / 'dist.pkl')
    single_out = str(tmp_path / 'single.pkl')
    dist_log = run_tool(['bash', 'tools/dist_test.sh', config, checkpoint, '2',
                         '--work-dir', str(tmp_path / 'dist_test'), '--out', dist_out,
                         *test_options])
    single_log = run_tool([sys.executable, 'tools/test.py', config, checkpoint,
                           '--work-dir', str(tmp_path / 'single_test'), '--out',
                           single_out, *test_options])
    assert 'Distributed training: True' in dist_log

    dist_metrics, single_metrics = last_json_line(dist_log), last_json_line(single_log)
    assert set(dist_metrics) == expected_keys
    assert dist_metrics == single_metrics
    # top-1 over 8 images is a multiple of 12.5 %
    assert dist_metrics['accuracy/top1'] % 12.5 == 0

    dist_scores, single_scores = load_scores(dist_out), load_scores(single_out)
    assert sorted(dist_scores) == list(range(8))  # both ranks' halves gathered
    for index, scores in single_scores.items():
        np.testing.assert_allclose(dist_scores[index], scores, atol=1e-5)
