import copy
import math

import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image

import mmdaf  # noqa: F401  (Runner.from_cfg does not process custom_imports)

CLASSES = ('alpha', 'beta', 'gamma')


def write_tiny_dataset(root, images_per_class=4, size=48):
    rng = np.random.default_rng(0)
    for class_name in CLASSES:
        (root / class_name).mkdir(parents=True)
        for i in range(images_per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / class_name / f'{i}.png')


def make_config(data_root, work_dir):
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(32, 32)),
        dict(type='PackInputs'),
    ]
    return Config(
        dict(
            default_scope='mmpretrain',
            work_dir=str(work_dir),
            model=dict(
                type='ImageClassifier',
                data_preprocessor=dict(
                    type='ClsDataPreprocessor',
                    num_classes=3,
                    mean=[123.675, 116.28, 103.53],
                    std=[58.395, 57.12, 57.375],
                    to_rgb=True),
                backbone=dict(type='ResNet', depth=18),
                neck=dict(
                    type='PAFBilinearNeck',
                    in_channels=512,
                    reduced_channels=64,
                    num_groups=4),
                head=dict(
                    type='LinearClsHead', num_classes=3, in_channels=1024)),
            train_dataloader=dict(
                batch_size=4,
                num_workers=0,
                sampler=dict(type='DefaultSampler', shuffle=True),
                collate_fn=dict(type='default_collate'),
                dataset=dict(
                    type='CustomDataset',
                    data_root=str(data_root),
                    pipeline=pipeline)),
            train_cfg=dict(by_epoch=False, max_iters=3),
            optim_wrapper=dict(
                optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
            default_hooks=dict(checkpoint=None, logger=dict(
                type='LoggerHook', interval=1)),
            env_cfg=dict(dist_cfg=dict(backend='gloo')),
            randomness=dict(seed=0),
            log_level='WARNING',
        ))


def test_paf_neck_trains_in_image_classifier(tmp_path):
    data_root = tmp_path / 'data'
    write_tiny_dataset(data_root)
    runner = Runner.from_cfg(make_config(data_root, tmp_path / 'work'))
    assert runner.model.neck.out_channels == 1024
    before = copy.deepcopy(runner.model.state_dict())

    runner.train()

    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss) and loss > 0
    after = runner.model.state_dict()
    for key in ('neck.projection.0.weight', 'head.fc.weight',
                'backbone.conv1.weight'):
        assert not torch.equal(before[key], after[key]), key
    assert runner.iter == 3
