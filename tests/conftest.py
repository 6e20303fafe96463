"""Shared fixtures: a tiny synthetic CUB-layout dataset and config helpers."""
import logging
import os
import os.path as osp

import pytest
import torch
from mmengine.logging import MMLogger

import mmdaf  # noqa: F401  (registers components before any config is built)
from mmdaf.datasets import make_synthetic_fgvc

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# Two cores on CI: one intra-op thread per test process keeps the runs steady.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope='session')
def tiny_cub_root(tmp_path_factory) -> str:
    """4 classes x (6 train + 2 test) synthetic images of 64 px, CUB layout."""
    root = str(tmp_path_factory.mktemp('tiny_cub') / 'CUB_200_2011')
    make_synthetic_fgvc(root, num_classes=4, train_per_class=6, test_per_class=2,
                        img_size=64, seed=0, num_workers=1)
    return root


def config_path(*parts: str) -> str:
    return osp.join(REPO_ROOT, 'configs', *parts)


def drop_synthetic_pretrained(model_cfg) -> None:
    """Train from random weights: remove the Pretrained init of the synthetic
    configs (``tools/misc/pretrain_synthetic.py`` makes that checkpoint; a
    clean checkout has none), in the student and, if any, the teacher."""
    model_cfg['backbone']['init_cfg'] = None
    teacher = model_cfg.get('teacher')
    if teacher is not None:
        teacher['backbone']['init_cfg'] = None



class ListHandler(logging.Handler):
    """Keeps the messages logged through it."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def log_messages():
    """The messages mmengine's current logger prints during the test."""
    logger = MMLogger.get_current_instance()
    handler = ListHandler()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)
