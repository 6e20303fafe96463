"""Log the effective batch and the learning rate actually used, at the start.

The batch size in a config is per process. Changing the number of GPUs
changes the total batch, and the learning rate follows it only when
``auto_scale_lr`` is enabled (``--auto-scale-lr``): a config tuned for 2 x 8
images trained on 8 GPUs runs with 4x the batch at the same learning rate,
and users then see a different accuracy without any hint in the log.
"""
import logging
from typing import List, Optional

from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS


def _format_lrs(lrs: List[float]) -> str:
    distinct = sorted(set(lrs))
    return f'{distinct[0]:g}' if len(distinct) == 1 else str([f'{lr:g}' for lr in lrs])


def effective_batch_report(world_size: int, batch_size: int, accumulative_counts: int,
                           config_lr: Optional[float], current_lrs: List[float],
                           auto_scale_lr: Optional[dict]) -> List[tuple]:
    """The lines logged by :class:`EffectiveBatchHook`, with their levels.

    Args:
        world_size (int): Number of processes (GPUs).
        batch_size (int): ``train_dataloader.batch_size``, per process.
        accumulative_counts (int): Gradient accumulation steps per update.
        config_lr (float, optional): ``optim_wrapper.optimizer.lr`` of the
            config, before any scaling; None if the config has none.
        current_lrs (list[float]): Learning rate of each parameter group at
            the start of training (after ``auto_scale_lr``).
        auto_scale_lr (dict, optional): The config's ``auto_scale_lr``,
            e.g. ``dict(base_batch_size=16, enable=False)``.

    Returns:
        list[tuple[int, str]]: ``(logging level, message)`` pairs.
    """
    total = world_size * batch_size
    per_update = total * accumulative_counts
    batch = (f'Effective batch: {world_size} process(es) x {batch_size} images '
             f'per process = {total} images per iteration')
    if accumulative_counts > 1:
        batch += (f', x {accumulative_counts} accumulated iterations = '
                  f'{per_update} images per optimizer step')
    lines = [(logging.INFO, batch + '.')]

    auto_scale_lr = auto_scale_lr or {}
    base = auto_scale_lr.get('base_batch_size')
    enabled = bool(auto_scale_lr.get('enable', False))
    lr_text = f'Learning rate at start: {_format_lrs(current_lrs)}'
    if config_lr is not None:
        lr_text += f' (config: {config_lr:g})'
    if base is None:
        lines.append((logging.INFO, lr_text + '; the config sets no '
                      'auto_scale_lr.base_batch_size.'))
        return lines
    if enabled:
        # mmengine scales by processes x per-process batch (accumulation aside).
        lines.append((logging.INFO, lr_text + f'; auto_scale_lr is on: scaled by '
                      f'{total}/{base} from the config value, which was set for '
                      f'a total batch of {base}.'))
        return lines
    lr_text += f'; auto_scale_lr is off (the config lr is meant for a total batch of {base}).'
    if total == base:
        lines.append((logging.INFO, lr_text))
        return lines
    hint = lr_text + (f' This run uses a total batch of {total}: pass --auto-scale-lr')
    if config_lr is not None:
        hint += f' (lr {config_lr * total / base:g})'
    if (base % world_size) == 0:
        hint += f', or keep the lr with train_dataloader.batch_size={base // world_size}'
    lines.append((logging.WARNING, hint + '.'))
    return lines


def _per_process_batch(runner) -> int:
    """The train loader's batch size (the config's, as mmengine's scaling uses)."""
    loader_cfg = runner.cfg.get('train_dataloader', None) or {}
    if loader_cfg.get('batch_size') is not None:
        return int(loader_cfg['batch_size'])
    return int(runner.train_dataloader.batch_size)


@HOOKS.register_module()
class EffectiveBatchHook(Hook):
    """Log the total batch and the learning rate in use before training starts.

    At ``before_train`` (after mmengine has applied ``auto_scale_lr``), rank 0
    logs one line with ``world size x per-process batch`` (and the gradient
    accumulation, if any) and one with the learning rate of the optimizer,
    the config's value and whether ``auto_scale_lr`` scaled it. When the total
    batch differs from ``auto_scale_lr.base_batch_size`` and scaling is off,
    the second line is a warning that says what to pass (``--auto-scale-lr``
    and the lr it gives, or the per-process batch that keeps the config's
    lr).
    """

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        optim_wrapper = runner.optim_wrapper
        wrappers = getattr(optim_wrapper, 'optim_wrappers', None)
        wrappers = list(wrappers.values()) if wrappers is not None else [optim_wrapper]
        current_lrs = [group['lr'] for wrapper in wrappers
                       for group in wrapper.optimizer.param_groups]
        accumulative_counts = max(
            getattr(wrapper, '_accumulative_counts', 1) for wrapper in wrappers)
        optimizer_cfg = (runner.cfg.get('optim_wrapper', None) or {}).get('optimizer', None)
        config_lr = optimizer_cfg.get('lr') if isinstance(optimizer_cfg, dict) else None
        for level, message in effective_batch_report(
                world_size=get_world_size(),
                batch_size=_per_process_batch(runner),
                accumulative_counts=accumulative_counts,
                config_lr=config_lr,
                current_lrs=current_lrs,
                auto_scale_lr=runner.cfg.get('auto_scale_lr', None)):
            print_log(message, logger='current', level=level)
