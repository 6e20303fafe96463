"""Box pooling: each feature cell weighted by its overlap with the box."""
import pytest
import torch

from mmdaf.models.utils.box_pooling import box_cell_weights, box_pooled_features, cell_overlaps


def test_cell_overlaps_are_interval_lengths_inside_each_cell():
    # Cells of 2 px on [0, 6): the interval [1, 4.5) covers 1, 2 and 0.5 px.
    overlaps = cell_overlaps(torch.tensor([[1.0]]), torch.tensor([[4.5]]), 3, 2.0)
    assert overlaps.shape == (1, 1, 3)
    assert overlaps[0, 0].tolist() == [1.0, 2.0, 0.5]


def test_box_weights_are_overlap_areas_over_the_box_area():
    # A 2 x 2 map over a 4 x 4 input: cells of 2 x 2 px, row-major.
    boxes = torch.tensor([[[1.0, 1.0, 3.0, 3.0],   # a quarter of each cell
                           [0.0, 0.0, 2.0, 2.0],   # exactly the top-left cell
                           [0.0, 0.0, 3.0, 2.0],   # 4 px^2 top-left, 2 top-right
                           [5.0, 5.0, 6.0, 6.0]]])  # outside: the global average
    weights = box_cell_weights(boxes, (2, 2), (4, 4))
    assert weights.shape == (1, 4, 4) and weights.dtype == torch.float32
    expected = torch.tensor([[0.25, 0.25, 0.25, 0.25],
                             [1.0, 0.0, 0.0, 0.0],
                             [4 / 6, 2 / 6, 0.0, 0.0],
                             [0.25, 0.25, 0.25, 0.25]])
    torch.testing.assert_close(weights[0], expected)


def test_box_weights_clip_the_box_to_the_input():
    # Half of this box lies left of the input: only the inside half counts.
    weights = box_cell_weights(torch.tensor([[[-2.0, 0.0, 2.0, 2.0]]]), (2, 2), (4, 4))
    assert weights[0, 0].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_pooled_features_average_the_cells_by_weight():
    feat = torch.arange(8, dtype=torch.float32).view(1, 2, 2, 2)  # C=2, cells 0..3
    boxes = torch.tensor([[[0.0, 0.0, 3.0, 2.0], [2.0, 2.0, 4.0, 4.0]]])
    pooled = box_pooled_features(feat, boxes, (4, 4))
    assert pooled.shape == (1, 2, 2)
    # Channel 0 holds 0, 1, 2, 3 and channel 1 holds 4, 5, 6, 7 in the cells.
    torch.testing.assert_close(pooled[0, 0], torch.tensor([1 / 3, 4 + 1 / 3]))
    torch.testing.assert_close(pooled[0, 1], torch.tensor([3.0, 7.0]))


def test_box_pooling_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r'boxes must be \(B, K, 4\)'):
        box_cell_weights(torch.zeros(2, 4), (2, 2), (4, 4))
    with pytest.raises(ValueError, match='batch size 1, the features 2'):
        box_pooled_features(torch.zeros(2, 3, 2, 2), torch.zeros(1, 1, 4), (4, 4))


def test_mask_pooling_weights_each_cell_by_the_share_the_mask_covers():
    from mmdaf.models.utils.box_pooling import mask_pooled_features
    feat = torch.arange(8, dtype=torch.float32).view(1, 2, 2, 2)  # C=2, cells 0..3
    # A 4 x 4 mask over the 2 x 2 map: all of cell 0, half of cell 1.
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    mask[0, 0, :2, :2] = True
    mask[0, 0, :2, 2] = True
    pooled = mask_pooled_features(feat.repeat(2, 1, 1, 1), mask)
    assert pooled.shape == (2, 2) and pooled.dtype == torch.float32
    # Cell weights 1 and 0.5, normalised: 2/3 of cell 0, 1/3 of cell 1.
    torch.testing.assert_close(pooled[0], torch.tensor([1 / 3, 4 + 1 / 3]))
    # An empty mask falls back to the global average.
    torch.testing.assert_close(pooled[1], torch.tensor([1.5, 5.5]))
    with pytest.raises(ValueError, match=r'mask must be \(B, 1, h, w\) with B = 2, '
                       r'got \(1, 1, 4, 4\)'):
        mask_pooled_features(feat.repeat(2, 1, 1, 1), mask[:1])
