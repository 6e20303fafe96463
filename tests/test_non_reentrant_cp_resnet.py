"""Non-reentrant activation checkpointing in the ResNet backbones: the same
network as mmpretrain's ResNet, checkpointed, and accepted by DDP when the
backbone runs twice in one step (DAF's student: images, then part images)."""
import socket

import pytest
import torch
import torch.distributed as torch_dist
from mmpretrain.models.backbones import ResNet

from mmdaf.engine import CPUDistributedDataParallel
from mmdaf.models.backbones import ExpandedInputResNet, NonReentrantCPResNet

# The reference is mmpretrain's own reentrant checkpointing, which torch warns about.
REENTRANT_WARNING = 'ignore:torch.utils.checkpoint. the use_reentrant parameter'


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def resnet_pair(depth: int, in_channels: int = 3):
    """mmpretrain's ResNet and ours, same weights, both with_cp=True."""
    torch.manual_seed(0)
    reference = ResNet(depth=depth, in_channels=in_channels, out_indices=(1, 2, 3),
                       with_cp=True)
    cls = NonReentrantCPResNet if in_channels == 3 else ExpandedInputResNet
    ours = cls(depth=depth, in_channels=in_channels, out_indices=(1, 2, 3), with_cp=True)
    ours.load_state_dict(reference.state_dict())
    for model in (reference, ours):
        model.train()  # (mmpretrain's ResNet.train returns None)
    return reference, ours


@pytest.mark.filterwarnings(REENTRANT_WARNING)
@pytest.mark.parametrize('depth, in_channels', [(18, 3), (50, 3), (18, 5)])
def test_same_keys_outputs_and_gradients_as_mmpretrain_resnet(depth, in_channels):
    reference, ours = resnet_pair(depth, in_channels)
    assert list(ours.state_dict()) == list(reference.state_dict())
    inputs = torch.randn(2, in_channels, 64, 64)
    outputs = [model(inputs) for model in (reference, ours)]
    for ref, out in zip(*outputs):
        assert out.shape == ref.shape
        assert torch.allclose(out, ref, atol=1e-5)
    for out in outputs:
        sum(feat.square().mean() for feat in out).backward()
    ref_grads = dict(reference.named_parameters())
    for name, param in ours.named_parameters():
        assert torch.allclose(param.grad, ref_grads[name].grad, atol=1e-5, rtol=1e-4), name


def count_block_calls(model) -> list:
    calls = []
    for layer_name in model.res_layers:
        for block in getattr(model, layer_name):
            # a pre-hook: a recomputation may stop before the block's end
            block.register_forward_pre_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize('with_cp, calls_after_backward', [(False, 8), (True, 16)])
def test_blocks_are_recomputed_in_backward_only_with_cp(with_cp, calls_after_backward):
    torch.manual_seed(0)
    model = NonReentrantCPResNet(depth=18, with_cp=with_cp)
    model.train()
    calls = count_block_calls(model)
    out, = model(torch.randn(2, 3, 32, 32))
    assert len(calls) == 8  # ResNet-18: 8 blocks, each run once forward
    out.sum().backward()
    assert len(calls) == calls_after_backward  # with_cp: each block runs again
    for block_layer in (model.layer1, model.layer4):
        assert block_layer.with_cp is with_cp
        assert all(block.with_cp is False for block in block_layer)
    # no gradient wanted: nothing is checkpointed (and nothing recomputed)
    calls.clear()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert len(calls) == 8


class TwicePerStep(torch.nn.Module):
    """A backbone run on the images and on a second batch in one step, like
    DAF's student on the images and the B*N part images."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        first, = self.backbone(images)
        second, = self.backbone(images.flip(-1).repeat(2, 1, 1, 1))
        return first.mean() + second.mean()


@pytest.fixture
def one_process_group(monkeypatch):
    for name, value in dict(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(name, value)
    torch_dist.init_process_group('gloo', rank=0, world_size=1)
    try:
        yield
    finally:
        torch_dist.destroy_process_group()


def train_two_steps_under_ddp(backbone) -> None:
    model = CPUDistributedDataParallel(TwicePerStep(backbone), broadcast_buffers=False)
    for _ in range(2):
        model(torch.randn(2, 3, 32, 32)).backward()


def test_ddp_accepts_a_checkpointed_backbone_run_twice_per_step(one_process_group):
    torch.manual_seed(0)
    backbone = NonReentrantCPResNet(depth=18, with_cp=True)
    backbone.train()
    train_two_steps_under_ddp(backbone)
    assert all(torch.isfinite(p.grad).all() for p in backbone.parameters())


@pytest.mark.filterwarnings(REENTRANT_WARNING)
def test_mmpretrain_reentrant_checkpointing_fails_under_ddp(one_process_group):
    """The failure NonReentrantCPResNet exists for (so the test above can fail)."""
    torch.manual_seed(0)
    backbone = ResNet(depth=18, with_cp=True)
    backbone.train()
    with pytest.raises(RuntimeError, match='Expected to mark a variable ready only once'):
        train_two_steps_under_ddp(backbone)
