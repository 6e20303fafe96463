"""Candidate anchors of SPPNHead: the anchors centred in the object mask."""
import pytest
import torch

from mmdaf.models.utils.anchor_candidates import anchor_mask_cells, select_candidates

# Centres (8, 8), (40, 24), (63, 63) and (-4, 70) (outside: clamped).
ANCHORS = torch.tensor([[0., 0., 16., 16.], [32., 16., 48., 32.], [60., 60., 66., 66.],
                        [-10., 64., 2., 76.]])


def test_anchor_mask_cells_look_up_the_nearest_cell_of_each_centre():
    # A 4 x 8 mask over a 64 x 64 image: cells of 16 rows x 8 columns.
    cells = anchor_mask_cells(ANCHORS, (64, 64), (4, 8))
    assert cells.dtype == torch.long
    assert cells.tolist() == [0 * 8 + 1, 1 * 8 + 5, 3 * 8 + 7, 3 * 8 + 0]
    assert anchor_mask_cells(ANCHORS, (64, 64), None) is None


def test_select_candidates_gathers_the_mask_and_keeps_all_for_an_empty_one():
    cells = anchor_mask_cells(ANCHORS, (64, 64), (4, 8))
    mask = torch.zeros(2, 1, 4, 8, dtype=torch.bool)
    mask[0, 0, 1, 5] = mask[0, 0, 3, 0] = True  # image 1: empty
    is_candidate = select_candidates(cells, mask, 2, 4, torch.device('cpu'))
    assert is_candidate.tolist() == [[False, True, False, True], [True] * 4]
    everything = select_candidates(None, None, 3, 4, torch.device('cpu'))
    assert everything.shape == (3, 4) and everything.all()


def test_select_candidates_checks_the_mask():
    cells = anchor_mask_cells(ANCHORS, (64, 64), (4, 8))
    with pytest.raises(ValueError, match=r'object_mask must be \(B, 1, h, w\)'):
        select_candidates(cells, torch.zeros(2, 4, 8, dtype=torch.bool), 2, 4, 'cpu')
    with pytest.raises(ValueError, match='object_mask has batch size 1, the features '
                       'have 2'):
        select_candidates(cells, torch.zeros(1, 1, 4, 8, dtype=torch.bool), 2, 4, 'cpu')
