"""FinestStageMapper: a 1x1 conv + ReLU on the finest stage only."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS

from mmdaf.models.necks.finest_stage_mapper import FinestStageMapper


def test_registered_in_mmdet_and_maps_the_finest_stage_by_hand():
    torch.manual_seed(0)
    neck = MODELS.build(dict(_scope_='mmdet', type='FinestStageMapper', in_channels=4,
                              out_channels=3))
    assert isinstance(neck, FinestStageMapper)
    c3, c4 = torch.randn(2, 4, 5, 5), torch.randn(2, 8, 3, 3)
    (out, ) = neck([c3, c4])
    conv = neck.conv.conv
    expected = F.relu(torch.einsum('oi,bihw->bohw', conv.weight[:, :, 0, 0], c3)
                      + conv.bias[None, :, None, None])
    assert out.shape == (2, 3, 5, 5)
    assert torch.allclose(out, expected, atol=1e-6)
    # The coarser stages are not read.
    assert torch.equal(neck([c3, torch.zeros_like(c4)])[0], out)


def test_wrong_finest_width_names_both_widths():
    neck = FinestStageMapper(in_channels=4, out_channels=3)
    with pytest.raises(ValueError, match='finest stage has 6 channels, in_channels is 4'):
        neck([torch.randn(1, 6, 2, 2)])
