"""Ramp the part losses in from zero at the start of training."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class PartLossWarmupHook(Hook):
    """Linear warm-up of a DAF model's part losses.

    Before each training iteration it sets ``model.part_loss_scale`` to
    ``start + (1 - start) * min(1, iter / warmup_iters)``; ``DAFClassifier``
    multiplies the part losses (``loss_rank``, ``loss_overlap``,
    ``loss_area``, ``loss_con``) by it. Why: at the start the student is at
    chance, the part images' cross entropies carry no order, and the ranking
    loss is noise whose gradient dwarfs the classification loss's. The scale
    depends on the iteration only, so a resumed run continues the same ramp.
    The current scale is logged as ``part_loss_scale``.

    Args:
        warmup_iters (int, optional): iterations of the ramp.
        warmup_epochs (float, optional): the ramp in epochs instead (converted
            with the training loader's length). Exactly one of the two.
        start (float): scale at iteration 0, in [0, 1]. Defaults to 0.
    """

    priority = 'NORMAL'

    def __init__(self, warmup_iters: Optional[int] = None,
                 warmup_epochs: Optional[float] = None, start: float = 0.0) -> None:
        if (warmup_iters is None) == (warmup_epochs is None):
            raise ValueError('PartLossWarmupHook: give exactly one of warmup_iters '
                             f'and warmup_epochs, got warmup_iters={warmup_iters}, '
                             f'warmup_epochs={warmup_epochs}')
        length = warmup_iters if warmup_iters is not None else warmup_epochs
        if length < 0:
            raise ValueError(f'PartLossWarmupHook: the warm-up length must be >= 0, '
                             f'got {length}')
        if not 0.0 <= start <= 1.0:
            raise ValueError(f'PartLossWarmupHook: start must be in [0, 1], got {start}')
        self.warmup_iters = warmup_iters
        self.warmup_epochs = warmup_epochs
        self.start = start

    def scale_at(self, iteration: int, iters_per_epoch: int = 1) -> float:
        """The part-loss scale at a (0-based) training iteration."""
        length = self.warmup_iters
        if length is None:
            length = self.warmup_epochs * iters_per_epoch
        if length <= 0:
            return 1.0
        return self.start + (1.0 - self.start) * min(1.0, iteration / length)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'part_loss_scale'):
            raise TypeError(f'PartLossWarmupHook needs a model with part_loss_scale '
                            f'(DAFClassifier), got {type(model).__name__}')
        iters_per_epoch = 1
        if self.warmup_epochs is not None:
            iters_per_epoch = len(runner.train_dataloader)
        scale = self.scale_at(runner.iter, iters_per_epoch)
        model.part_loss_scale = scale
        runner.message_hub.update_scalar('train/part_loss_scale', scale)
