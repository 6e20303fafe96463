"""Stop (or skip the update) when a loss or gradient is NaN or Inf, before the
optimizer writes it into the weights."""
import logging
from typing import Dict, List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import Tensor, nn

SKIPPED_INFO_KEY = 'nonfinite_skipped_updates'


def _loss_terms(outputs: dict) -> Dict[str, Tensor]:
    """The entries mmengine sums into the total loss (names with 'loss')."""
    terms = {}
    for name, value in outputs.items():
        if 'loss' not in name:
            continue
        if isinstance(value, Tensor):
            terms[name] = value
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(v, Tensor) for v in value):
            terms[name] = torch.stack([v.detach().float().sum() for v in value])
    return terms


def first_nonfinite_term(outputs: dict) -> Optional[str]:
    """Name of the first loss term (in dict order) holding a NaN or Inf."""
    terms = _loss_terms(outputs)
    if not terms:
        return None
    # One device sync for all terms.
    finite = torch.stack([torch.isfinite(t.detach()).all() for t in terms.values()])
    if bool(finite.all()):
        return None
    return list(terms)[int((~finite).nonzero()[0])]


def _format_terms(outputs: dict) -> str:
    parts = []
    for name, value in _loss_terms(outputs).items():
        value = value.detach().float()
        shown = f'{value.item():.4g}' if value.numel() == 1 else (
            f'{value.numel()} values, {int((~torch.isfinite(value)).sum())} '
            'non-finite')
        parts.append(f'{name}={shown}')
    return ', '.join(parts)


def _optimizers(optim_wrapper) -> List[torch.optim.Optimizer]:
    """The torch optimizers of an ``OptimWrapper`` or ``OptimWrapperDict``."""
    wrappers = getattr(optim_wrapper, 'optim_wrappers', None)
    if wrappers is not None:
        return [wrapper.optimizer for wrapper in wrappers.values()]
    return [optim_wrapper.optimizer]


def _updated_this_iter(optim_wrapper) -> bool:
    """Whether this iteration ends with an optimizer step (not a gradient
    accumulation iteration)."""
    wrappers = getattr(optim_wrapper, 'optim_wrappers', None)
    wrappers = list(wrappers.values()) if wrappers is not None else [optim_wrapper]
    return any(wrapper.should_update() for wrapper in wrappers)


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Refuse NaN/Inf losses and gradients during training.

    Every training iteration, a forward hook on the (DDP-unwrapped) model
    looks at the loss dict the model returns, and a step pre-hook on each
    torch optimizer looks at the gradients just before ``optimizer.step()``.

    - ``skip_nonfinite=False`` (default): the first non-finite loss term raises
      ``FloatingPointError`` naming the term, all terms' values and the
      iteration, before backward, so no NaN reaches the weights or a
      checkpoint. A non-finite gradient behind finite losses raises naming
      the parameter.
    - ``skip_nonfinite=True``: the update of that iteration is skipped: the
      gradients are dropped (set to None) inside ``optimizer.step()``, which
      makes torch's optimizers leave those parameters and their state
      (momentum, Adam moments, weight decay) untouched; the buffers
      (BatchNorm running statistics and counters) are restored, after backward, to their
      values before the forward. Each skip is logged as a warning with the running count, which
      is also kept in the message hub (``nonfinite_skipped_updates``, saved in
      checkpoints).

    Why these hook points: they are plain torch hooks, so they work under any
    ``OptimWrapper``. With ``AmpOptimWrapper`` the grad scaler unscales and
    skips steps with Inf gradients itself (a normal event in dynamic loss
    scaling); our step pre-hook only runs when the scaler does call
    ``optimizer.step()``. Under DDP the gradient check sees the all-reduced
    gradients, so every rank makes the same skip decision even when only one
    rank's loss was non-finite; in error mode the rank that raises ends the
    job (torchrun stops the other ranks).

    Args:
        skip_nonfinite (bool): skip the update instead of raising. Defaults to
            False.
    """

    priority = 'VERY_HIGH'

    def __init__(self, skip_nonfinite: bool = False) -> None:
        self.skip_nonfinite = skip_nonfinite
        self.num_skipped = 0
        self._handles: list = []
        self._iter = 0
        self._param_names: Dict[int, str] = {}
        self._buffer_backup: List[Tensor] = []
        self._skip_reason: Optional[str] = None
        self._restore_pending = False
        self._clips_gradients = False

    # ------------------------------------------------------------ runner hooks
    def before_train(self, runner) -> None:
        self._remove_handles()
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._model = model
        self._param_names = {id(p): name for name, p in model.named_parameters()}
        self._work_dir = runner.work_dir
        self._clips_gradients = bool(
            getattr(runner.optim_wrapper, 'clip_grad_kwargs', None))
        self._message_hub = runner.message_hub
        self.num_skipped = runner.message_hub.get_info(SKIPPED_INFO_KEY, 0)
        if self.skip_nonfinite:
            self._handles.append(model.register_forward_pre_hook(self._backup_buffers))
        self._handles.append(model.register_forward_hook(self._check_losses))
        for optimizer in _optimizers(runner.optim_wrapper):
            self._handles.append(
                optimizer.register_step_pre_hook(self._check_gradients))

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._iter = runner.iter

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if self._restore_pending:
            # Not earlier: autograd checks that BatchNorm's running statistics
            # are unchanged until backward has run.
            self._restore_buffers()
            self._restore_pending = False
        if not self.skip_nonfinite or not _updated_this_iter(runner.optim_wrapper):
            return
        if self._skip_reason is not None:
            self.num_skipped += 1
            runner.message_hub.update_info(SKIPPED_INFO_KEY, self.num_skipped)
            print_log(f'FiniteLossHook: skipped the update of iteration '
                      f'{self._iter + 1}: {self._skip_reason} '
                      f'({self.num_skipped} update(s) skipped so far)',
                      logger='current', level=logging.WARNING)
        self._skip_reason = None

    def after_train(self, runner) -> None:
        self._remove_handles()

    # ------------------------------------------------------------ torch hooks
    def _backup_buffers(self, module: nn.Module, args) -> None:
        if not module.training:
            return
        self._buffer_backup = [buffer.detach().clone() for buffer in module.buffers()]

    def _restore_buffers(self) -> None:
        with torch.no_grad():
            for buffer, saved in zip(self._model.buffers(), self._buffer_backup):
                buffer.copy_(saved)

    def _check_losses(self, module: nn.Module, args, outputs) -> None:
        if not module.training or not isinstance(outputs, dict):
            return
        term = first_nonfinite_term(outputs)
        if term is None:
            return
        where = f'iteration {self._iter + 1} (runner.iter={self._iter})'
        if self.skip_nonfinite:
            self._restore_pending = True
            if self._skip_reason is None:
                self._skip_reason = (f'non-finite loss term {term} '
                                     f'({_format_terms(outputs)})')
            return
        last_ckpt = self._message_hub.get_info('last_ckpt', None)
        saved = (f'the last checkpoint is {last_ckpt}' if last_ckpt else
                 'no checkpoint was saved yet')
        raise FloatingPointError(
            f'Non-finite loss term {term} at {where}: {_format_terms(outputs)}. '
            f'Training stopped before this update, so the weights hold no NaN/Inf; '
            f'{saved} (work_dir {self._work_dir}). To skip such updates instead, '
            "set dict(type='FiniteLossHook', skip_nonfinite=True) in custom_hooks; "
            'a lower learning rate or gradient clipping '
            '(optim_wrapper.clip_grad=dict(max_norm=...)) often removes the cause.')

    def _check_gradients(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        params = [p for group in optimizer.param_groups for p in group['params']
                  if p.grad is not None]
        reason = self._skip_reason
        if reason is None and params:
            reason = self._nonfinite_gradient_reason(params)
        if reason is None:
            return
        if not self.skip_nonfinite:
            raise FloatingPointError(
                f'FiniteLossHook: {reason} at iteration {self._iter + 1} '
                f'(runner.iter={self._iter}). Training stopped before the '
                'optimizer step, so the weights hold no NaN/Inf. To skip such '
                "updates instead, set dict(type='FiniteLossHook', "
                'skip_nonfinite=True) in custom_hooks.')
        for param in params:
            param.grad = None
        self._skip_reason = reason

    def _nonfinite_gradient_reason(self, params: List[Tensor]) -> Optional[str]:
        """Which gradients are NaN/Inf, as text; None if all are finite."""
        # One device sync for all parameters.
        finite = torch.stack([torch.isfinite(p.grad).all() for p in params]).tolist()
        names = [self._param_names.get(id(p), f'<parameter {tuple(p.shape)}>')
                 for p, ok in zip(params, finite) if not ok]
        if not names:
            return None
        if len(names) == 1:
            return f'non-finite gradient of {names[0]} (the losses were finite)'
        reason = (f'non-finite gradients in {len(names)} of {len(params)} parameters '
                  f'({", ".join(names[:3])}, ...) although the losses were finite')
        if self._clips_gradients and len(names) == len(params):
            # clip_grad_norm_ scales every gradient by max_norm / NaN.
            reason += ('; gradient clipping (optim_wrapper.clip_grad) spreads one '
                       'non-finite gradient to all parameters, so the first one '
                       'cannot be told')
        return reason

    def _remove_handles(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
