"""A NaN loss stops training naming the term and the iteration, before any NaN
reaches the weights or a checkpoint; or, when asked, its update is skipped."""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner
from test_train_resume import tiny_baseline_cfg

NAN_ITER = 3  # runner.iter when the loss turns NaN, i.e. the 4th iteration


def add_nan_loss_term(runner: Runner) -> None:
    """From iteration NAN_ITER on, the model returns an extra NaN term that is
    connected to the weights (its gradient is NaN)."""

    def hook(module, args, outputs):
        if module.training and isinstance(outputs, dict) and runner.iter == NAN_ITER:
            nan = torch.tensor(float('nan'))
            outputs['loss_injected'] = module.head.fc.weight.sum() * nan

    runner.model.register_forward_hook(hook)


def checkpoint_is_finite(path: str) -> bool:
    state = torch.load(path, map_location='cpu')['state_dict']
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nan_loss_stops_with_term_and_iteration(tiny_cub_root, tmp_path):
    work_dir = str(tmp_path / 'work')
    cfg = tiny_baseline_cfg(tiny_cub_root, work_dir, max_iters=6)
    runner = Runner.from_cfg(cfg)
    add_nan_loss_term(runner)
    with pytest.raises(FloatingPointError) as info:
        runner.train()
    message = str(info.value)
    assert message.startswith(
        'Non-finite loss term loss_injected at iteration 4 (runner.iter=3): loss=')
    assert 'loss_injected=nan' in message
    assert f'the last checkpoint is {osp.join(work_dir, "iter_2.pth")}' in message
    assert "dict(type='FiniteLossHook', skip_nonfinite=True)" in message
    assert sorted(osp.basename(p) for p in glob.glob(f'{work_dir}/*.pth')) == [
        'iter_2.pth']
    assert checkpoint_is_finite(osp.join(work_dir, 'iter_2.pth'))
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())


def test_without_the_hook_nan_weights_reach_the_checkpoint(tiny_cub_root, tmp_path):
    """The failure the hook prevents (so the test above can fail)."""
    work_dir = str(tmp_path / 'work')
    cfg = tiny_baseline_cfg(tiny_cub_root, work_dir, max_iters=4)
    cfg.custom_hooks = []
    runner = Runner.from_cfg(cfg)
    add_nan_loss_term(runner)
    runner.train()
    assert not checkpoint_is_finite(osp.join(work_dir, 'iter_4.pth'))


def test_skip_mode_skips_the_update_and_counts_it(tiny_cub_root, tmp_path):
    work_dir = str(tmp_path / 'work')
    cfg = tiny_baseline_cfg(tiny_cub_root, work_dir, max_iters=6)
    cfg.custom_hooks = [dict(type='FiniteLossHook', skip_nonfinite=True)]
    runner = Runner.from_cfg(cfg)
    snapshots = {}

    def nan_inputs(module, args, kwargs):
        # Weights and optimizer state before iterations NAN_ITER and NAN_ITER+1.
        if runner.iter in (NAN_ITER, NAN_ITER + 1) and module.training:
            snapshots[runner.iter] = (
                copy.deepcopy(module.state_dict()),
                copy.deepcopy(runner.optim_wrapper.optimizer.state_dict()['state']))
        if runner.iter == NAN_ITER and module.training:
            # NaN activations: also the BatchNorm running statistics see NaN.
            kwargs['inputs'] = kwargs['inputs'] * float('nan')
        return args, kwargs

    runner.model.register_forward_pre_hook(nan_inputs, with_kwargs=True)
    runner.train()

    assert runner.iter == 6
    weights_before, optim_before = snapshots[NAN_ITER]
    weights_after, optim_after = snapshots[NAN_ITER + 1]
    for key, value in weights_before.items():  # parameters and BN buffers
        assert torch.equal(weights_after[key], value), key
    for index, state in optim_before.items():
        assert torch.equal(optim_after[index]['momentum_buffer'],
                           state['momentum_buffer'])
    # iterations after the skipped one do update
    assert any(not torch.equal(runner.model.state_dict()[k], v)
               for k, v in weights_after.items())
    for path in glob.glob(f'{work_dir}/*.pth'):
        assert checkpoint_is_finite(path), path
    assert runner.message_hub.get_info('nonfinite_skipped_updates') == 1

    log_file = glob.glob(f'{runner.log_dir}/*.log')[0]
    with open(log_file) as file:
        log = file.read()
    assert ('FiniteLossHook: skipped the update of iteration 4: non-finite loss '
            'term loss (loss=nan) (1 update(s) skipped so far)') in log


@pytest.mark.parametrize('clip_grad', [None, dict(max_norm=10.0)])
def test_non_finite_gradient_behind_finite_losses_is_named(tiny_cub_root, tmp_path,
                                                           clip_grad):
    cfg = tiny_baseline_cfg(tiny_cub_root, str(tmp_path / 'work'), max_iters=6)
    cfg.optim_wrapper.clip_grad = clip_grad
    runner = Runner.from_cfg(cfg)

    def poison_gradient(grad):
        return grad * float('nan') if runner.iter == NAN_ITER else grad

    runner.model.head.fc.bias.register_hook(poison_gradient)
    if clip_grad is None:
        expected = (r'non-finite gradient of head\.fc\.bias \(the losses were '
                    r'finite\) at iteration 4 \(runner.iter=3\)')
    else:  # clipping scales every gradient by max_norm / NaN
        expected = (r'non-finite gradients in 62 of 62 parameters \(backbone.conv1.'
                    r'weight, .*\) although the losses were finite; gradient clipping '
                    r'\(optim_wrapper.clip_grad\) spreads one non-finite gradient')
    with pytest.raises(FloatingPointError, match=expected):
        runner.train()
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())
