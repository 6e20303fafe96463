"""A Runner trains a few iterations, then resumes at the right iteration with the
same optimizer state."""
import copy

import torch
from conftest import config_path, drop_synthetic_pretrained
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner


def tiny_baseline_cfg(data_root: str, work_dir: str, max_iters: int) -> Config:
    cfg = Config.fromfile(config_path('ablation', 'r18_baseline_synthetic.py'))
    drop_synthetic_pretrained(cfg.model)
    cfg.work_dir = work_dir
    cfg.model.head.num_classes = 4
    cfg.data_preprocessor.num_classes = 4
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
        cfg[loader].batch_size = 4
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.train_cfg = dict(by_epoch=False, max_iters=max_iters, val_interval=1000)
    cfg.param_scheduler = dict(type='ConstantLR', factor=1.0, by_epoch=False)
    cfg.default_hooks.checkpoint = dict(type='AtomicCheckpointHook', interval=2, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_level = 'WARNING'
    return cfg


class IterRecorder(Hook):
    """Records the index of every training iteration that runs."""

    def __init__(self, ran_iters: list) -> None:
        self.ran_iters = ran_iters

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.ran_iters.append(runner.iter)


def optimizer_momentum(runner: Runner) -> dict:
    state = runner.optim_wrapper.optimizer.state_dict()['state']
    return {k: v['momentum_buffer'].clone() for k, v in state.items()}


def test_resume_continues_at_saved_iteration(tiny_cub_root, tmp_path):
    work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(tiny_baseline_cfg(tiny_cub_root, work_dir, max_iters=4))
    runner.train()
    assert runner.iter == 4
    saved_momentum = optimizer_momentum(runner)
    saved_weights = copy.deepcopy(runner.model.state_dict())

    cfg = tiny_baseline_cfg(tiny_cub_root, work_dir, max_iters=6)
    cfg.resume = True  # 'auto': the latest checkpoint in work_dir
    resumed = Runner.from_cfg(cfg)
    resumed.load_or_resume()

    assert resumed.iter == 4
    resumed_momentum = optimizer_momentum(resumed)
    assert resumed_momentum.keys() == saved_momentum.keys()
    for key, buffer in saved_momentum.items():
        assert torch.equal(resumed_momentum[key], buffer)
    for key, value in saved_weights.items():
        assert torch.equal(resumed.model.state_dict()[key], value), key

    ran_iters = []
    resumed.register_hook(IterRecorder(ran_iters))
    resumed.train()
    assert ran_iters == [4, 5]
    assert resumed.iter == 6


def test_load_from_checkpoint_restores_weights_only(tiny_cub_root, tmp_path):
    work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(tiny_baseline_cfg(tiny_cub_root, work_dir, max_iters=2))
    runner.train()
    weights = copy.deepcopy(runner.model.state_dict())

    cfg = tiny_baseline_cfg(tiny_cub_root, str(tmp_path / 'other'), max_iters=2)
    cfg.load_from = f'{work_dir}/iter_2.pth'
    loaded = Runner.from_cfg(cfg)
    loaded.load_or_resume()
    assert loaded.iter == 0
    for key, value in weights.items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
