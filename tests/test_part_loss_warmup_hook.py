"""PartLossWarmupHook alone: the linear ramp of the part-loss scale, set on
the model before each training iteration."""
import pytest
import torch.nn as nn
from mmpretrain.registry import HOOKS

import mmdaf  # noqa: F401  (registers the hook)


class PartLossModel(nn.Module):
    """What the hook reads and writes of DAFClassifier."""

    def __init__(self):
        super().__init__()
        self.part_loss_scale = 1.0


class FakeRunner:
    """The runner attributes the hook reads; logs the scalars it writes."""

    def __init__(self, model, iteration: int, loader_length: int = 10):
        self.model = model
        self.iter = iteration
        self.train_dataloader = [None] * loader_length
        self.scalars = {}
        runner = self

        class MessageHub:

            @staticmethod
            def update_scalar(key, value):
                runner.scalars[key] = value

        self.message_hub = MessageHub()


def test_ramps_linearly_from_start_to_one():
    hook = HOOKS.build(dict(type='PartLossWarmupHook', warmup_iters=10, start=0.2))
    assert [hook.scale_at(i) for i in (0, 5, 10, 20)] == pytest.approx(
        [0.2, 0.6, 1.0, 1.0])
    epochs = HOOKS.build(dict(type='PartLossWarmupHook', warmup_epochs=2))
    assert epochs.scale_at(5, iters_per_epoch=10) == pytest.approx(0.25)
    # No ramp at all: full scale from the start.
    assert HOOKS.build(dict(type='PartLossWarmupHook', warmup_iters=0)).scale_at(0) == 1.0


def test_sets_the_model_and_logs_the_scale():
    hook = HOOKS.build(dict(type='PartLossWarmupHook', warmup_iters=10, start=0.2))
    runner = FakeRunner(PartLossModel(), iteration=3)
    hook.before_train_iter(runner, batch_idx=0)
    assert runner.model.part_loss_scale == pytest.approx(0.2 + 0.8 * 0.3)
    assert runner.scalars['train/part_loss_scale'] == pytest.approx(0.44)


def test_epochs_are_converted_with_the_loader_length():
    hook = HOOKS.build(dict(type='PartLossWarmupHook', warmup_epochs=0.5))
    runner = FakeRunner(PartLossModel(), iteration=4, loader_length=16)
    hook.before_train_iter(runner, batch_idx=4)
    assert runner.model.part_loss_scale == pytest.approx(0.5)  # 4 of 8 iterations


def test_a_model_without_part_losses_is_refused():
    hook = HOOKS.build(dict(type='PartLossWarmupHook', warmup_iters=10))
    with pytest.raises(TypeError, match='PartLossWarmupHook needs a model with '
                       r'part_loss_scale \(DAFClassifier\), got Linear'):
        hook.before_train_iter(FakeRunner(nn.Linear(1, 1), iteration=0), batch_idx=0)


@pytest.mark.parametrize('kwargs, message', [
    (dict(), 'exactly one of warmup_iters and warmup_epochs'),
    (dict(warmup_iters=5, warmup_epochs=1), 'exactly one'),
    (dict(warmup_iters=-1), 'must be >= 0, got -1'),
    (dict(warmup_iters=5, start=1.5), r'start must be in \[0, 1\], got 1.5'),
])
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HOOKS.build(dict(type='PartLossWarmupHook', **kwargs))
