"""Cross-image box similarity: what recurs on every object ranks first."""
import pytest
import torch

from mmdaf.models.utils.part_consistency import cross_image_box_similarity


def _feat_with_cells(vectors_per_image):
    """(B, C, 2, 2) features; vectors_per_image[b][k] is cell k (row-major)."""
    cells = torch.tensor(vectors_per_image, dtype=torch.float32)  # (B, 4, C)
    return cells.permute(0, 2, 1).reshape(len(vectors_per_image), -1, 2, 2)


# Cells of 2 x 2 px on a 4 x 4 input: box k covers exactly cell k.
CELL_BOXES = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0],
                            [0.0, 2.0, 2.0, 4.0], [2.0, 2.0, 4.0, 4.0]]])


def test_a_pattern_every_image_shares_scores_highest():
    # Channel 0 is a "part" that every image shows, at a different cell each
    # time; every other cell holds clutter of its own (one channel each).
    part_cells = [0, 3, 1]
    feat = torch.zeros(3, 13, 2, 2)
    for image, part_cell in enumerate(part_cells):
        for cell in range(4):
            channel = 0 if cell == part_cell else 1 + 4 * image + cell
            feat[image, channel, cell // 2, cell % 2] = 1.0
    boxes = CELL_BOXES.repeat(3, 1, 1)
    similarity = cross_image_box_similarity(feat, boxes, (4, 4))
    assert similarity.shape == (3, 4) and similarity.dtype == torch.float32
    assert similarity.argmax(dim=1).tolist() == part_cells
    # The part matches itself in both other images: cosine 1 after centring.
    torch.testing.assert_close(similarity[0, 0], torch.tensor(1.0))


def test_similarity_is_the_mean_of_the_best_match_in_each_other_image():
    torch.manual_seed(0)
    feat = torch.randn(3, 5, 2, 2)
    boxes = CELL_BOXES.repeat(3, 1, 1)
    similarity = cross_image_box_similarity(feat, boxes, (4, 4))
    centred = feat - feat.mean(dim=(0, 2, 3), keepdim=True)
    cells = torch.nn.functional.normalize(centred.flatten(2), dim=1)  # (B, C, 4)
    # Box k of image 0 is cell k; its best match in images 1 and 2, averaged.
    best = [(cells[0, :, 0] @ cells[j]).max() for j in (1, 2)]
    torch.testing.assert_close(similarity[0, 0], (best[0] + best[1]) / 2)


def test_the_cell_mask_limits_the_matches_and_an_empty_mask_allows_all():
    part, other = [1.0, 0.0], [0.0, 1.0]
    feat = _feat_with_cells([[part, other, other, other],
                             [other, other, other, part]])
    boxes = CELL_BOXES[:, :1].repeat(2, 1, 1)  # the first cell of each image
    free = cross_image_box_similarity(feat, boxes, (4, 4))
    mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    mask[1, 0, 2:, 2:] = False  # image 1 may not match at its part cell
    masked = cross_image_box_similarity(feat, boxes, (4, 4), mask)
    assert masked[0, 0] < free[0, 0]
    mask[1] = False  # nothing allowed: all cells count again
    torch.testing.assert_close(cross_image_box_similarity(feat, boxes, (4, 4), mask), free)


def test_one_image_has_nothing_to_compare_with():
    with pytest.raises(ValueError, match='needs at least 2, got 1'):
        cross_image_box_similarity(torch.zeros(1, 3, 2, 2), CELL_BOXES, (4, 4))
