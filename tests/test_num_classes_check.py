"""num_classes in the config disagreeing with the data stops the run before the
first iteration, naming the config keys and the dataset."""
import os.path as osp
import socket

import pytest
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel
from mmengine.runner import Runner
from mmpretrain.registry import DATASETS, MODELS
from test_daf_classifier import tiny_daf_cfg
from test_train_resume import tiny_baseline_cfg

from mmdaf.engine.hooks.num_classes_check_hook import (
    check_num_classes,
    dataset_class_count,
)


def cub(root, split='train', **kwargs):
    return DATASETS.build(dict(type='CUB', data_root=root, split=split, pipeline=[],
                               _scope_='mmpretrain', **kwargs))


def test_class_count_of_a_cub_layout_set_comes_from_its_labels(tiny_cub_root):
    dataset = cub(tiny_cub_root)
    assert len(dataset.metainfo['classes']) == 200  # mmpretrain's bird names
    assert dataset_class_count(dataset) == (4, 'largest label + 1')
    own = cub(tiny_cub_root, metainfo=dict(classes=['a', 'b', 'c', 'd', 'e']))
    assert dataset_class_count(own) == (5, "len(metainfo['classes'])")


def test_runner_stops_before_the_first_iteration(tiny_cub_root, tmp_path):
    work_dir = str(tmp_path / 'work')
    cfg = tiny_baseline_cfg(tiny_cub_root, work_dir, max_iters=2)
    cfg.model.head.num_classes = 10
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError) as info:
        runner.train()
    assert str(info.value) == (
        "model.head.num_classes=10 but the train_dataloader dataset SyntheticFGVC at "
        f"'{tiny_cub_root}' (split 'train') has 4 classes (len(metainfo['classes'])). "
        'Set them to 4 in the config, e.g. --cfg-options model.head.num_classes=4')
    assert runner.iter == 0
    assert not osp.exists(osp.join(work_dir, 'iter_2.pth'))


def test_runner_test_checks_the_test_set(tiny_cub_root, tmp_path):
    cfg = tiny_baseline_cfg(tiny_cub_root, str(tmp_path / 'work'), max_iters=2)
    cfg.data_preprocessor.num_classes = 7
    with pytest.raises(ValueError, match=r"data_preprocessor.num_classes=7 but the "
                       r"test_dataloader dataset SyntheticFGVC at .* \(split 'test'\) "
                       r"has 4"):
        Runner.from_cfg(cfg).test()


def test_every_daf_head_is_compared(tiny_cub_root):
    model_cfg = tiny_daf_cfg()
    model_cfg.teacher.head.num_classes = 200
    model_cfg.fusion_head.num_classes = 200
    model = MODELS.build(model_cfg)
    with pytest.raises(ValueError) as info:
        check_num_classes(model, cub(tiny_cub_root), 'train_dataloader')
    message = str(info.value)
    assert message.startswith('model.teacher.head.num_classes=200, '
                              'model.fusion_head.num_classes=200 but the')
    assert 'model.head.num_classes' not in message.split(' but ')[0]
    assert message.endswith('--cfg-options model.teacher.head.num_classes=4 '
                            'model.fusion_head.num_classes=4')
    # a matching model passes
    check_num_classes(MODELS.build(tiny_daf_cfg()), cub(tiny_cub_root),
                      'train_dataloader')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_ddp_wrapped_model_is_unwrapped(tiny_cub_root):
    torch_dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{free_port()}',
                                  rank=0, world_size=1)
    try:
        model_cfg = tiny_daf_cfg()
        model_cfg.head.num_classes = 3
        wrapped = MMDistributedDataParallel(module=MODELS.build(model_cfg))
        with pytest.raises(ValueError, match=r'^model.head.num_classes=3 but the '
                           'val_dataloader dataset CUB'):
            check_num_classes(wrapped, cub(tiny_cub_root, split='test'),
                              'val_dataloader')
    finally:
        torch_dist.destroy_process_group()
