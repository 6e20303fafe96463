"""The complete DAF-net (R18 config) under CPU autocast: the whole loss and its
backward give finite values and a finite gradient for every parameter.

bf16 is the CPU's mixed precision; fp16 has the GPU recipe's narrow range
(5 exponent bits: 1e-12 rounds to 0, 65504 is the largest value), so the
fp16 run stands in for ``AmpOptimWrapper`` on a GPU as far as the numbers
go."""
import pytest
import torch
from mmpretrain.registry import MODELS
from test_daf_classifier import batch, tiny_daf_cfg


def build_daf(with_cp: bool):
    """The R18 DAF model (4 classes, 64 px), with_cp in both backbones or not."""
    cfg = tiny_daf_cfg()
    cfg.backbone.with_cp = with_cp
    cfg.teacher.backbone.with_cp = with_cp
    torch.manual_seed(0)
    return MODELS.build(cfg)


@pytest.mark.parametrize('dtype, with_cp', [
    (torch.bfloat16, False),
    (torch.bfloat16, True),
    (torch.float16, False),
])
def test_complete_daf_loss_and_backward_under_autocast_is_finite(dtype, with_cp):
    model = build_daf(with_cp)
    model.init_weights()  # the real initialisation (zero-init residuals, ...)
    model.train()
    with torch.autocast('cpu', dtype=dtype):
        losses = model(**batch(), mode='loss')
        total, log_vars = model.parse_losses(losses)
    assert {'loss_pred', 'loss_rank', 'loss_overlap', 'loss_area',
            'loss_teacher', 'loss_group', 'loss_hint', 'loss_soft',
            'loss_csf'} <= set(log_vars)
    for name, value in log_vars.items():
        assert torch.isfinite(torch.as_tensor(value)).all(), (name, value)
    total.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f'{name} got no gradient'
        assert torch.isfinite(param.grad).all(), f'{name} has a non-finite gradient'
    # autocast did run the convolutions in low precision
    captured = []
    model.backbone.layer1.register_forward_hook(
        lambda module, args, output: captured.append(output.dtype))
    with torch.autocast('cpu', dtype=dtype), torch.no_grad():
        model.extract_feat(batch()['inputs'])
    assert captured == [dtype]
