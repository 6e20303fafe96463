"""The part-discovery priors on hand-made maps with known values."""
import math

import pytest
import torch

from mmdaf.models.losses.part_priors import (
    cell_coordinates,
    concentration_loss,
    orthogonality_loss,
    part_centroids,
    presence_loss,
)


def one_hot_maps(cells, height=4, width=4):
    """(1, P + 1, h, w): part p wholly in cell cells[p], background elsewhere."""
    maps = torch.zeros(1, len(cells) + 1, height, width)
    maps[0, -1] = 1.0
    for part, (row, col) in enumerate(cells):
        maps[0, -1, row, col] = 0.0
        maps[0, part, row, col] = 1.0
    return maps


def test_cell_coordinates_are_cell_centres_in_unit_square():
    rows, cols = cell_coordinates(2, 4, like=torch.zeros(1))
    assert rows.shape == (2, 4)
    assert torch.allclose(rows[:, 0], torch.tensor([0.25, 0.75]))
    assert torch.allclose(cols[0], torch.tensor([0.125, 0.375, 0.625, 0.875]))


def test_centroid_of_a_one_cell_part_is_its_cell_centre():
    maps = one_hot_maps([(1, 2), (3, 0)])
    centre = part_centroids(maps[:, :-1])
    assert centre.shape == (1, 2, 2)
    assert torch.allclose(centre[0], torch.tensor([[0.375, 0.625], [0.875, 0.125]]),
                          atol=1e-5)


def test_centroid_of_two_equal_cells_is_between_them():
    parts = torch.zeros(1, 1, 2, 2)
    parts[0, 0, 0, 0] = parts[0, 0, 1, 1] = 0.5
    assert torch.allclose(part_centroids(parts)[0, 0], torch.tensor([0.5, 0.5]),
                          atol=1e-5)


def test_concentration_is_zero_for_one_cell_parts():
    assert concentration_loss(one_hot_maps([(0, 0), (2, 3)])).item() == pytest.approx(
        0.0, abs=1e-6)


def test_concentration_of_two_diagonal_cells_by_hand():
    # Half the mass at (0.25, 0.25), half at (0.75, 0.75): the centre is
    # (0.5, 0.5), each cell 2 * 0.25^2 = 0.125 from it.
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, 0, 0] = maps[0, 0, 1, 1] = 1.0
    maps[0, 1, 0, 1] = maps[0, 1, 1, 0] = 1.0
    assert concentration_loss(maps).item() == pytest.approx(0.125, abs=1e-5)


def test_concentration_ignores_the_background_channel():
    maps = one_hot_maps([(1, 1)])
    # The background is spread over 15 cells, which would cost a lot.
    assert concentration_loss(maps).item() == pytest.approx(0.0, abs=1e-6)


def test_orthogonality_by_hand():
    features = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    # cos = 1/sqrt(2): squared 0.5, for both off-diagonal entries.
    assert orthogonality_loss(features).item() == pytest.approx(0.5, abs=1e-5)
    orthogonal = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])
    assert orthogonality_loss(orthogonal).item() == pytest.approx(0.0, abs=1e-6)


def test_orthogonality_of_one_part_is_zero_and_keeps_the_graph():
    features = torch.ones(2, 1, 3, requires_grad=True)
    loss = orthogonality_loss(features)
    assert loss.item() == 0.0
    loss.backward()
    assert features.grad is not None


def test_presence_is_zero_when_each_part_is_somewhere_and_background_everywhere():
    assert presence_loss(one_hot_maps([(0, 0), (1, 1)])).item() == pytest.approx(0.0)


def test_presence_by_hand():
    # Two images, one part: at most 0.6 in image 0, 0.2 in image 1; the
    # background reaches 0.4 in image 0 and 1.0 in image 1.
    maps = torch.zeros(2, 2, 1, 2)
    maps[0, 0] = torch.tensor([[0.6, 0.5]])
    maps[0, 1] = 1 - maps[0, 0]
    maps[1, 0] = torch.tensor([[0.2, 0.0]])
    maps[1, 1] = 1 - maps[1, 0]
    expected = (1 - 0.6) + ((1 - 0.5) + (1 - 1.0)) / 2
    assert presence_loss(maps).item() == pytest.approx(expected, abs=1e-6)


def test_even_spread_costs_one_sixth_in_the_limit():
    maps = torch.full((1, 2, 64, 64), 0.5)
    # Variance of the uniform distribution on [0, 1] per axis: 1/12, less
    # the grid's 1/(12 * 64^2).
    expected = 2 * (1 / 12 - 1 / (12 * 64 ** 2))
    assert concentration_loss(maps).item() == pytest.approx(expected, rel=1e-4)
    assert not math.isnan(expected)


