"""Every shipped config trains two iterations under 2-process DDP on the CPU.

ONE torchrun with 2 processes (the launcher of tools/dist_train.sh) trains all
configs one after the other (tests/ddp_worker.py builds each Runner with
tools/train.py's functions), at 64 px on 8 images of 4 classes: one epoch is
2 iterations per rank. The configs are used as shipped except for sizes, data
and class counts (``--cfg-options``) and, without a GPU, AMP (fp32 instead;
the model, with_cp included, is the config's).

A parameter without gradient fails the second iteration under DDP unless the
config sets ``find_unused_parameters``; a backbone checkpointed with reentrant
checkpointing and run twice per step fails the first backward. After the two
steps, the two ranks' parameters must be bit-identical and the optimizer
must have updated every part of the model.
"""
import glob
import json
import math
import os
import os.path as osp
import socket
import subprocess
import sys
from typing import List

import pytest
from conftest import REPO_ROOT
from mmengine.config import Config

from mmdaf.datasets import make_synthetic_fgvc
from mmdaf.utils import pretrained_init_cfgs

SIZE = 64
NUM_CLASSES = 4
TIMEOUT_S = 900

CONFIGS = sorted(
    osp.relpath(path, osp.join(REPO_ROOT, 'configs'))
    for path in glob.glob(osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in path)
WITH_CP = ['model.backbone.with_cp=True', 'model.teacher.backbone.with_cp=True']
# The wrappers (NonReentrantCPBackbone, ExpandedInputBackbone) hold with_cp in
# the wrapped backbone's config.
WRAPPED_WITH_CP = ['model.backbone.backbone.with_cp=True',
                   'model.teacher.backbone.backbone.with_cp=True']
# name -> (config, extra options): every config, plus the complete R18 and
# ConvNeXt models with activation checkpointing in both backbones.
JOBS = {name: (name, []) for name in CONFIGS}
JOBS['daf_r18_synthetic.py+with_cp'] = ('daf_r18_synthetic.py', WITH_CP)
JOBS['daf_convnext-w32_synthetic.py+with_cp'] = ('daf_convnext-w32_synthetic.py',
                                                 WRAPPED_WITH_CP)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def pretrained_paths(model_cfg) -> List[str]:
    """Config keys of the ``init_cfg``s that download weights."""
    return [key for key, _ in pretrained_init_cfgs(model_cfg)]


def small_options(config: str, data_root: str) -> List[str]:
    """--cfg-options that make a shipped config train on the tiny set."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', config))
    loader = 'train_dataloader'
    options = [f'{loader}.dataset.data_root={data_root}', f'{loader}.batch_size=2',
               f'{loader}.num_workers=0', f'{loader}.persistent_workers=False',
               'train_cfg.max_epochs=1', 'default_hooks.checkpoint=None',
               'default_hooks.logger.interval=1', 'randomness.seed=0',
               f'data_preprocessor.num_classes={NUM_CLASSES}',
               f'model.head.num_classes={NUM_CLASSES}']
    dataset = cfg.train_dataloader.dataset
    if dataset.type not in ('CUB', 'SyntheticFGVC'):  # Stanford Cars, Aircraft
        options += [f'{loader}.dataset.type=CUB', f'{loader}.dataset.split=train']
    for index, step in enumerate(dataset.pipeline):
        if step['type'] == 'Resize':
            options.append(f'{loader}.dataset.pipeline.{index}.scale={SIZE}')
        elif step['type'] in ('RandomCrop', 'CenterCrop'):
            options.append(f'{loader}.dataset.pipeline.{index}.crop_size={SIZE}')
    if cfg.model.get('teacher') is not None:
        options.append(f'model.teacher.head.num_classes={NUM_CLASSES}')
    if cfg.model.get('fusion_head') is not None:
        options.append(f'model.fusion_head.num_classes={NUM_CLASSES}')
    options += [f'{key}=None' for key in pretrained_paths(cfg.model)]  # no downloads
    return options


@pytest.fixture(scope='module')
def ddp_run(tmp_path_factory):
    """Runs every job in one pair of processes; returns (out_dir, output)."""
    root = tmp_path_factory.mktemp('ddp_configs')
    data_root = str(root / 'CUB_200_2011')
    make_synthetic_fgvc(data_root, num_classes=NUM_CLASSES, train_per_class=2,
                        test_per_class=1, img_size=SIZE, seed=0, num_workers=1)
    jobs = []
    for name, (config, extra) in JOBS.items():
        argv = [osp.join(REPO_ROOT, 'configs', config), '--launcher', 'pytorch',
                '--no-validate', '--work-dir', str(root / 'work' / name),
                '--cfg-options', *small_options(config, data_root), *extra]
        jobs.append(dict(name=name, argv=argv))
    jobs_file = root / 'jobs.json'
    jobs_file.write_text(json.dumps(jobs))
    out_dir = str(root / 'results')
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(
                   [REPO_ROOT] + ([os.environ['PYTHONPATH']]
                                  if os.environ.get('PYTHONPATH') else [])))
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
               f'--master_port={free_port()}', osp.join('tests', 'ddp_worker.py'),
               str(jobs_file), out_dir]
    process = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S)
    return dict(out_dir=out_dir, work_dir=str(root / 'work'), output=process.stdout,
                returncode=process.returncode)


def component(name: str) -> str:
    """The part of the model a parameter belongs to: 'backbone', 'sppn_head',
    'teacher.neck', ..."""
    parts = name.split('.')
    return '.'.join(parts[:2]) if parts[0] == 'teacher' else parts[0]


def rank_results(ddp_run, name: str) -> List[dict]:
    results = []
    for rank in (0, 1):
        path = osp.join(ddp_run['out_dir'], name, f'rank{rank}.json')
        if not osp.isfile(path):
            pytest.fail(f'{name} did not run on rank {rank} (torchrun exit status '
                        f'{ddp_run["returncode"]}):\n{ddp_run["output"][-4000:]}')
        with open(path) as file:
            result = json.load(file)
        if 'error' in result:
            pytest.fail(f'{name} failed on rank {rank}:\n{result["error"]}')
        results.append(result)
    return results


def expected_losses(config: str) -> set:
    model = Config.fromfile(osp.join(REPO_ROOT, 'configs', config)).model
    if model.type != 'DAFClassifier':
        return {'loss'}
    expected = {'loss', 'loss_pred', 'loss_rank', 'loss_overlap', 'loss_area'}
    if model.sppn_head.type == 'PartDiscoveryHead':
        expected = {'loss', 'loss_pred', 'loss_part_cls', 'loss_concentration',
                    'loss_orthogonality', 'loss_presence'}
    if model.get('loss_concentrate') is not None:
        expected.add('loss_con')
    if model.get('teacher') is not None:
        expected |= {'loss_teacher', 'loss_group', 'loss_csf'}
    if model.get('distill') is not None:
        expected |= {'loss_hint', 'loss_soft'}
    return expected


@pytest.mark.parametrize('name', list(JOBS))
def test_config_trains_two_ddp_iterations_with_identical_ranks(ddp_run, name):
    config, _ = JOBS[name]
    rank0, rank1 = rank_results(ddp_run, name)
    for result in (rank0, rank1):
        assert result['wrapper'] == 'CPUDistributedDataParallel'
        assert result['iters'] == 2
        # No shipped config needs the unused-parameter search (it costs a
        # graph traversal per step); a config that does must say why.
        cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', config))
        assert result['find_unused_parameters'] is bool(
            cfg.get('find_unused_parameters', False))
        assert set(result['losses']) >= expected_losses(config)
        assert all(math.isfinite(value) for value in result['losses'].values())
        # With weight decay every non-zero parameter moves in an update; a
        # zero-initialised bias whose gradient is 0 (e.g. an FPN level on
        # which no part box was picked) may stay 0.
        # Frozen parameters (requires_grad=False) are meant to stay.
        stuck = sorted(set(result['unchanged']) & set(result['nonzero'])
                       - set(result['frozen']))
        assert stuck == [], 'non-zero parameters the optimizer did not update'
        assert set(result['frozen']) <= set(result['unchanged'])
        changed = {component(name) for name in result['digests']
                   if name not in result['unchanged']}
        assert changed == {component(name) for name in result['digests']}
    assert rank0['digests'].keys() == rank1['digests'].keys()
    differing = [key for key, digest in rank0['digests'].items()
                 if rank1['digests'][key] != digest]
    assert differing == [], 'parameters that differ between the ranks'


def rank0_log(ddp_run, name: str) -> str:
    logs = glob.glob(osp.join(ddp_run['work_dir'], name, '*', '*.log'))
    assert len(logs) == 1, logs
    with open(logs[0]) as file:
        return file.read()


def test_the_log_shows_the_effective_batch_and_the_lr_advice(ddp_run):
    log = rank0_log(ddp_run, 'daf_r50_cub.py')
    assert ('Effective batch: 2 process(es) x 2 images per process = 4 images '
            'per iteration.') in log
    # lr 0.01 for a total batch of 16 (auto_scale_lr.base_batch_size); 4 here.
    assert ('Learning rate at start: 0.01 (config: 0.01); auto_scale_lr is off (the '
            'config lr is meant for a total batch of 16). This run uses a total batch '
            'of 4: pass --auto-scale-lr (lr 0.0025), or keep the lr with '
            'train_dataloader.batch_size=8.') in log
    synthetic = rank0_log(ddp_run, 'daf_r18_synthetic.py')
    assert ('Learning rate at start: 0.02 (config: 0.02); the config sets no '
            'auto_scale_lr.base_batch_size.') in synthetic
