import pytest
import torch

import mmdaf  # noqa: F401  (registers the modules)
from mmdaf.models.utils import LocationHeatmap, LocationHeatmapOutput


def _feats(batch, grid_h, grid_w, channels=(4, 8, 16), fill=0.0):
    """C3/C4/C5-shaped tensors at strides 8/16/32 relative to a grid_h x grid_w C3."""
    sizes = [(grid_h, grid_w), (grid_h // 2, grid_w // 2), (grid_h // 4, grid_w // 4)]
    return [torch.full((batch, c, h, w), fill) for c, (h, w) in zip(channels, sizes)]


def test_square_active_in_c3_gives_exactly_that_square():
    # 128 x 128 input -> C3 grid 16 x 16. C3 active in rows 4:8, cols 6:10;
    # C4 and C5 are constant (nothing above their mean -> they contribute 0).
    c3, c4, c5 = _feats(1, 16, 16, fill=0.5)
    c3.zero_()
    c3[0, 0, 4:8, 6:10] = 2.0
    c3[0, 1, 4:8, 6:10] = 1.0
    out = LocationHeatmap()([c3, c4, c5], (128, 128))

    assert isinstance(out, LocationHeatmapOutput)
    expected_mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    expected_mask[..., 4:8, 6:10] = True
    assert out.object_mask.dtype == torch.bool
    assert torch.equal(out.object_mask, expected_mask)
    # H = (1 + 0 + 0) / 3 inside, renormalised to 1; 0 outside.
    assert torch.equal(out.heatmap, expected_mask.float())
    # 16 cells of 8 x 8 input pixels.
    assert out.object_area.shape == (1,)
    assert out.object_area.item() == 16 * 64


def test_aligned_squares_on_all_stages_hand_computed_blend():
    # 256 x 256 input: C3 32x32, C4 16x16, C5 8x8. One object square aligned to
    # the stride-32 cells 2:4 -> C4 cells 4:8 -> C3 cells 8:16.
    c3, c4, c5 = _feats(1, 32, 32)
    c3[0, :, 8:16, 8:16] = 1.0
    c4[0, :, 4:8, 4:8] = 1.0
    c5[0, :, 2:4, 2:4] = 1.0
    out = LocationHeatmap()([c3, c4, c5], (256, 256))
    heat = out.heatmap[0, 0]

    # Inside: all three stage maps are 1 -> H = 1.
    assert heat[12, 12].item() == pytest.approx(1.0)
    # Cell (7, 12), one row above the square. Bilinear, align_corners=False:
    #   C3: 0 (outside).
    #   C4: row src = (7 + 0.5) / 2 - 0.5 = 3.25 -> 0.25 of row 4 (inside),
    #       col src = 5.75 between inside cols 5, 6 -> 1; value 0.25.
    #   C5: row src = (7 + 0.5) / 4 - 0.5 = 1.375 -> 0.375 of row 2 (inside),
    #       col src = 2.625 between inside cols 2, 3 -> 1; value 0.375.
    #   H = (0 + 0.25 + 0.375) / 3 = 0.2083333.
    assert heat[7, 12].item() == pytest.approx(0.625 / 3, abs=1e-6)
    assert out.object_mask[0, 0, 8:16, 8:16].all()
    assert not out.object_mask[0, 0, 0, 0]
    assert not out.object_mask[0, 0, 25:, 25:].any()
    assert heat.min() >= 0 and heat.max() <= 1


@pytest.mark.parametrize('fill', [0.0, 3.0])
def test_flat_features_fall_back_to_whole_image(fill):
    feats = _feats(2, 16, 16, fill=fill)
    out = LocationHeatmap()(feats, (128, 128))
    assert out.object_mask.all()
    assert torch.equal(out.heatmap, torch.ones(2, 1, 16, 16))
    assert torch.isfinite(out.heatmap).all()
    assert out.object_area.tolist() == [128 * 128, 128 * 128]


def test_per_image_fallback_and_area_for_non_multiple_input():
    # 100 x 120 input, C3 grid 13 x 15 (as ResNet gives): a cell covers
    # (100 / 13) x (120 / 15) input pixels.
    c3 = torch.zeros(2, 4, 13, 15)
    c4 = torch.zeros(2, 8, 7, 8)
    c5 = torch.zeros(2, 16, 4, 4)
    c3[0, :, 2:5, 3:6] = 1.0  # image 0: a 3 x 3 square; image 1: nothing
    out = LocationHeatmap()([c3, c4, c5], (100, 120))
    assert out.heatmap.shape == (2, 1, 13, 15)
    assert out.object_mask[0].sum().item() == 9
    assert out.object_mask[0, 0, 2:5, 3:6].all()
    assert out.object_mask[1].all()
    cell_area = (100 / 13) * (120 / 15)
    assert out.object_area[0].item() == pytest.approx(9 * cell_area)
    assert out.object_area[1].item() == pytest.approx(100 * 120)


def test_no_gradient_and_registry_build():
    from mmpretrain.registry import MODELS
    heatmap_module = MODELS.build(dict(type='LocationHeatmap'))
    assert isinstance(heatmap_module, LocationHeatmap)
    feats = [f.requires_grad_() for f in _feats(1, 8, 8, fill=1.0)]
    with torch.no_grad():
        feats[0][0, 0, 0, 0] = 5.0
    out = heatmap_module(feats, (64, 64))
    assert not out.heatmap.requires_grad
    assert out.object_mask[0, 0, 0, 0] and out.object_mask.sum() == 1


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match='at least one'):
        LocationHeatmap()([], (64, 64))
    with pytest.raises(ValueError, match=r'feats\[1\]'):
        LocationHeatmap()([torch.zeros(1, 4, 8, 8), torch.zeros(4, 4, 4)], (64, 64))
    with pytest.raises(ValueError, match='resize_mode'):
        LocationHeatmap(resize_mode='linear')


def test_stage_maps_are_averaged_with_equal_weights():
    # C3 active on rows 0:8 of a 16 x 16 grid, C4 on its cols 0:4 (C3 cols
    # 0:8, nearest resize): stage maps 1 there, 0 elsewhere; C5 flat.
    c3, c4, c5 = _feats(1, 16, 16)
    c3[0, :, 0:8, :] = 1.0
    c4[0, :, :, 0:4] = 1.0
    equal = LocationHeatmap(resize_mode='nearest')([c3, c4, c5], (128, 128))
    # Equal weights: (1 + 1) / 3 where both, 1 / 3 where one; max-normalised.
    assert equal.heatmap[0, 0, 0, 0].item() == pytest.approx(1.0)
    assert equal.heatmap[0, 0, 0, 12].item() == pytest.approx(0.5)
    assert equal.heatmap[0, 0, 12, 0].item() == pytest.approx(0.5)
    assert equal.heatmap[0, 0, 12, 12].item() == 0.0
