"""EffectiveBatchHook: the total batch and the learning rate in use are in the
log at the start, with what to pass when they do not match the config."""
import glob
import logging
import os.path as osp

from mmengine.runner import Runner
from test_train_resume import tiny_baseline_cfg

from mmdaf.engine.hooks.effective_batch_hook import effective_batch_report

INFO, WARNING = logging.INFO, logging.WARNING


def test_one_gpu_with_a_config_made_for_16_images_gets_the_advice():
    lines = effective_batch_report(world_size=1, batch_size=8, accumulative_counts=1,
                                   config_lr=0.01, current_lrs=[0.01],
                                   auto_scale_lr=dict(base_batch_size=16))
    assert lines == [
        (INFO, 'Effective batch: 1 process(es) x 8 images per process = 8 images per '
         'iteration.'),
        (WARNING, 'Learning rate at start: 0.01 (config: 0.01); auto_scale_lr is off '
         '(the config lr is meant for a total batch of 16). This run uses a total batch '
         'of 8: pass --auto-scale-lr (lr 0.005), or keep the lr with '
         'train_dataloader.batch_size=16.'),
    ]


def test_the_reference_batch_needs_no_advice():
    lines = effective_batch_report(2, 8, 1, 0.01, [0.01], dict(base_batch_size=16))
    assert lines[1] == (INFO, 'Learning rate at start: 0.01 (config: 0.01); '
                        'auto_scale_lr is off (the config lr is meant for a total '
                        'batch of 16).')


def test_eight_gpus_with_auto_scale_lr_and_accumulation():
    lines = effective_batch_report(8, 8, 2, 0.01, [0.04, 0.04],
                                   dict(base_batch_size=16, enable=True))
    assert lines == [
        (INFO, 'Effective batch: 8 process(es) x 8 images per process = 64 images per '
         'iteration, x 2 accumulated iterations = 128 images per optimizer step.'),
        (INFO, 'Learning rate at start: 0.04 (config: 0.01); auto_scale_lr is on: '
         'scaled by 64/16 from the config value, which was set for a total batch of '
         '16.'),
    ]


def test_no_per_process_batch_is_suggested_when_it_does_not_divide():
    _, (level, message) = effective_batch_report(3, 8, 1, 0.01, [0.01, 0.02],
                                                  dict(base_batch_size=16))
    assert level == WARNING
    assert message.startswith("Learning rate at start: ['0.01', '0.02'] (config: 0.01)")
    assert message.endswith('total batch of 24: pass --auto-scale-lr (lr 0.015).')


def test_the_runner_logs_the_scaled_lr_of_the_optimizer(tiny_cub_root, tmp_path):
    work_dir = str(tmp_path / 'work')
    cfg = tiny_baseline_cfg(tiny_cub_root, work_dir, max_iters=1)
    cfg.log_level = 'INFO'
    cfg.auto_scale_lr = dict(base_batch_size=16, enable=True)
    assert cfg.optim_wrapper.optimizer.lr == 0.02 and cfg.train_dataloader.batch_size == 4
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.optim_wrapper.optimizer.param_groups[0]['initial_lr'] == 0.005
    log_file, = glob.glob(osp.join(work_dir, '*', '*.log'))
    with open(log_file) as file:
        log = file.read()
    assert ('Effective batch: 1 process(es) x 4 images per process = 4 images per '
            'iteration.') in log
    assert ('Learning rate at start: 0.005 (config: 0.02); auto_scale_lr is on: scaled '
            'by 4/16 from the config value, which was set for a total batch of 16.') in log
