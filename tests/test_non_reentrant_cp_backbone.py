"""Non-reentrant activation checkpointing for any mmpretrain backbone
(``non_reentrant_checkpointing``, ``NonReentrantCPBackbone``): the same
network and gradients as without checkpointing, blocks recomputed in
backward, and accepted by DDP when the backbone runs twice in one step (DAF's
student), where mmpretrain's own reentrant checkpointing fails.

Tiny ConvNeXt and Swin archs on 32-64 px inputs keep this file to seconds."""
import copy
import socket

import pytest
import torch
import torch.distributed as torch_dist
import torch.utils.checkpoint as torch_checkpoint
from mmpretrain.registry import MODELS

from mmdaf.engine import CPUDistributedDataParallel
from mmdaf.models.backbones import NonReentrantCPBackbone
from mmdaf.models.utils.non_reentrant_checkpoint import non_reentrant_checkpointing

# Two stages each of two blocks: enough for a block to be recomputed.
CONVNEXT = dict(type='ConvNeXt', arch=dict(depths=[2, 2], channels=[8, 16]),
                out_indices=(0, 1), gap_before_final_norm=False)
SWIN = dict(type='SwinTransformer', arch=dict(embed_dims=8, depths=[2, 2], num_heads=[2, 2]),
            img_size=32, window_size=4, out_indices=(0, 1), drop_path_rate=0.0,
            pad_small_map=True)
BACKBONES = {'convnext': CONVNEXT, 'swin': SWIN}
# Input size per backbone: 32 px -> ConvNeXt 8x8, 4x4; Swin 8x8, 4x4 tokens.
SIZE = 32


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def grad_fn_name(use_reentrant=None) -> str:
    """Name of the grad_fn of a checkpointed ``x * 2``: the reentrant variant
    wraps the call in one autograd Function, the non-reentrant one records
    the multiplication itself."""
    x = torch.ones(3, requires_grad=True)
    kwargs = {} if use_reentrant is None else dict(use_reentrant=use_reentrant)
    return type(torch_checkpoint.checkpoint(lambda t: t * 2, x, **kwargs).grad_fn).__name__


@pytest.mark.filterwarnings('ignore:torch.utils.checkpoint')
def test_context_makes_checkpoint_non_reentrant_by_default_only_inside():
    original = torch_checkpoint.checkpoint
    assert grad_fn_name() == 'CheckpointFunctionBackward'  # torch's default
    with non_reentrant_checkpointing():
        assert torch_checkpoint.checkpoint is not original
        assert grad_fn_name() == 'MulBackward0'
        assert grad_fn_name(use_reentrant=True) == 'CheckpointFunctionBackward'
    assert torch_checkpoint.checkpoint is original
    with pytest.raises(KeyError):
        with non_reentrant_checkpointing():
            raise KeyError('inside')
    assert torch_checkpoint.checkpoint is original  # restored after an error


def build_pair(name: str):
    """mmpretrain's backbone without checkpointing, and the same weights in
    NonReentrantCPBackbone with with_cp=True."""
    torch.manual_seed(0)
    reference = MODELS.build(dict(BACKBONES[name], with_cp=False))
    wrapped = NonReentrantCPBackbone(backbone=dict(BACKBONES[name], with_cp=True))
    wrapped.backbone.load_state_dict(reference.state_dict())
    reference.train()
    wrapped.train()
    return reference, wrapped


def block_entry_calls(backbone: torch.nn.Module) -> list:
    """Counts the runs of each checkpointable block's first module
    (ConvNeXt: depthwise_conv, Swin: norm1): the recomputation in backward
    runs the block's inner forward, not the block's forward."""
    calls = []
    for module in backbone.modules():
        if isinstance(getattr(module, 'with_cp', None), bool):
            first = next(module.children())
            first.register_forward_pre_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize('name', list(BACKBONES))
def test_same_outputs_and_gradients_as_without_checkpointing(name):
    reference, wrapped = build_pair(name)
    assert list(wrapped.state_dict()) == [f'backbone.{k}' for k in reference.state_dict()]
    calls = block_entry_calls(wrapped)
    inputs = torch.randn(2, 3, SIZE, SIZE)
    outputs = [model(inputs) for model in (reference, wrapped)]
    assert [tuple(o.shape) for o in outputs[1]] == [(2, 8, 8, 8), (2, 16, 4, 4)]
    for ref, out in zip(*outputs):
        assert torch.allclose(out, ref, atol=1e-6)
    assert len(calls) == 4  # 4 blocks, each run once
    for out in outputs:
        sum(feat.square().mean() for feat in out).backward()
    assert len(calls) == 8  # with_cp: each block ran again in backward
    ref_grads = dict(reference.named_parameters())
    for key, param in wrapped.backbone.named_parameters():
        assert torch.allclose(param.grad, ref_grads[key].grad, atol=1e-6, rtol=1e-4), key


def test_wrapper_init_cfg_goes_to_the_wrapped_backbone(tmp_path):
    torch.manual_seed(1)
    source = MODELS.build(CONVNEXT)
    path = tmp_path / 'classifier.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()}},
               path)
    init_cfg = dict(type='Pretrained', checkpoint=str(path), prefix='backbone')
    wrapped = NonReentrantCPBackbone(backbone=CONVNEXT, init_cfg=init_cfg)
    assert wrapped.backbone.init_cfg == init_cfg
    wrapped.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(wrapped.backbone.state_dict()[key], value), key
    with pytest.raises(ValueError, match='init_cfg is set both on the wrapper'):
        NonReentrantCPBackbone(backbone=dict(CONVNEXT, init_cfg=init_cfg), init_cfg=init_cfg)


def test_frozen_modules_get_no_gradient_and_stay_in_eval_mode():
    wrapped = NonReentrantCPBackbone(backbone=CONVNEXT, frozen_modules=('norm0', ))
    wrapped.train()
    frozen = {key for key, param in wrapped.named_parameters() if not param.requires_grad}
    assert frozen == {'backbone.norm0.weight', 'backbone.norm0.bias'}
    assert not wrapped.backbone.norm0.training and wrapped.backbone.norm1.training
    sum(feat.sum() for feat in wrapped(torch.randn(1, 3, SIZE, SIZE))).backward()
    assert wrapped.backbone.norm0.weight.grad is None
    assert wrapped.backbone.norm1.weight.grad is not None
    with pytest.raises(ValueError, match=r"frozen_modules \['norm5'\] are not modules of "
                       'ConvNeXt'):
        NonReentrantCPBackbone(backbone=CONVNEXT, frozen_modules=('norm5', ))


class TwicePerStep(torch.nn.Module):
    """A backbone run on the images and on a second batch in one step, like
    DAF's student on the images and the B*N part images."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        first = self.backbone(images)
        second = self.backbone(images.flip(-1).repeat(2, 1, 1, 1))
        return sum(feat.mean() for feat in first + second)


@pytest.fixture
def one_process_group(monkeypatch):
    for key, value in dict(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(key, value)
    torch_dist.init_process_group('gloo', rank=0, world_size=1)
    try:
        yield
    finally:
        torch_dist.destroy_process_group()


def ddp_step_grads(backbone: torch.nn.Module, inputs: torch.Tensor) -> dict:
    model = CPUDistributedDataParallel(TwicePerStep(backbone), broadcast_buffers=False)
    model(inputs).backward()
    return {key: param.grad.clone() for key, param in backbone.named_parameters()}


@pytest.mark.parametrize('name', list(BACKBONES))
def test_ddp_accepts_the_wrapper_run_twice_per_step(one_process_group, name):
    reference, wrapped = build_pair(name)
    inputs = torch.randn(2, 3, SIZE, SIZE)
    checkpointed = ddp_step_grads(wrapped, inputs)
    plain = ddp_step_grads(reference, inputs)
    # Same gradients as the backbone without checkpointing, under DDP too.
    for key, grad in checkpointed.items():
        assert torch.allclose(grad, plain[key[len('backbone.'):]], atol=1e-6, rtol=1e-4), key


@pytest.mark.filterwarnings('ignore:torch.utils.checkpoint')
@pytest.mark.parametrize('name', list(BACKBONES))
def test_mmpretrain_reentrant_checkpointing_fails_under_ddp(one_process_group, name):
    """The failure NonReentrantCPBackbone exists for (so the test above can fail)."""
    torch.manual_seed(0)
    backbone = MODELS.build(dict(copy.deepcopy(BACKBONES[name]), with_cp=True))
    backbone.train()
    with pytest.raises(RuntimeError, match='Expected to mark a variable ready only once'):
        ddp_step_grads(backbone, torch.randn(2, 3, SIZE, SIZE))
