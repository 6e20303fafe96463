"""The batched first-N greedy NMS of SPPNHead's proposals, on hand-made boxes.

``tests/test_sppn_cache.py`` checks it through the head against the
per-image torchvision path."""
import pytest
import torch
from torchvision.ops import box_iou, nms

from mmdaf.models.utils.part_nms import (
    first_nms_survivors,
    greedy_survivors,
    iou_above,
    pick_first_n,
)


def _coords_and_areas(boxes):
    coords = boxes.float().permute(2, 0, 1)  # (4, B, k)
    return coords, (coords[2] - coords[0]) * (coords[3] - coords[1])


def _random_boxes(num_imgs, num_topk, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(num_imgs, num_topk, 2, generator=generator) * 20
    sides = 4 + torch.rand(num_imgs, num_topk, 2, generator=generator) * 12
    return torch.cat([centres - sides / 2, centres + sides / 2], dim=-1).round()


def test_iou_above_matches_box_iou_and_never_holds_for_zero_area_boxes():
    boxes = torch.tensor([[[0., 0., 4., 4.], [0., 0., 4., 5.], [0., 0., 4., 16.],
                           [2., 2., 6., 6.], [3., 3., 3., 9.]]])  # last: zero width
    coords, areas = _coords_and_areas(boxes)
    above = iou_above(coords[..., None], areas[..., None], coords[:, :, None],
                      areas[:, None], 0.25)
    assert above.shape == (1, 5, 5) and above.dtype == torch.bool
    iou = box_iou(boxes[0], boxes[0])
    finite = torch.isfinite(iou)
    # IoU 0.8 is above 0.25, IoU exactly 0.25 is not (strictly greater).
    assert above[0, 0, 1] and not above[0, 0, 2]
    assert torch.equal(above[0][finite], (iou[finite].double() > 0.25))
    # The zero-area box: 0 / 0 against itself, never above.
    assert not above[0, 4].any() and not above[0, :, 4].any()


@pytest.mark.parametrize('num_topk', [12, 90])
@pytest.mark.parametrize('iou_thr', [0.05, 0.3, 0.7])
def test_pairwise_and_round_by_round_overlaps_keep_the_torchvision_first_n(num_topk,
                                                                         iou_thr):
    num_imgs, num_keep = 3, 5
    boxes = _random_boxes(num_imgs, num_topk)
    boxes[:, 3] = boxes[:, 2]  # a duplicate
    generator = torch.Generator().manual_seed(1)
    valid = torch.rand(num_imgs, num_topk, generator=generator) > 0.3
    valid[2, 2:] = False  # fewer candidates than N
    pairwise = first_nms_survivors(boxes, valid, num_keep, iou_thr, pairwise=True)
    by_round = first_nms_survivors(boxes, valid, num_keep, iou_thr, pairwise=False)
    assert pairwise.shape == (num_imgs, num_topk) and pairwise.dtype == torch.bool
    assert torch.equal(pairwise, by_round)
    scores = torch.linspace(1, 0, num_topk)  # the list is in NMS order
    for img in range(num_imgs):
        valid_pos = valid[img].nonzero().squeeze(1)
        kept = valid_pos[nms(boxes[img, valid_pos], scores[valid_pos], iou_thr)]
        assert pairwise[img].nonzero().squeeze(1).tolist() == \
            sorted(kept[:num_keep].tolist())


def test_greedy_survivors_keep_the_first_live_candidate_each_round():
    # Position 0 removes 1; 2 removes nothing; 3 is not a candidate.
    valid = torch.tensor([[True, True, True, False]])
    removes = torch.tensor([[1, 1, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0],
                            [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)

    def suppressed_by(first):
        return removes[first[:, 0]]

    assert greedy_survivors(valid, suppressed_by, 1).tolist() == \
        [[True, False, False, False]]
    # Rounds past the last live candidate pick the placeholder: nothing more.
    assert greedy_survivors(valid, suppressed_by, 3).tolist() == \
        [[True, False, True, False]]


def test_pick_first_n_takes_survivors_then_suppressed_then_repeats_by_score():
    survived = torch.tensor([[False, True, False, True, False],
                             [True, False, False, False, False]])
    valid = torch.tensor([[True, True, True, True, False],
                          [True, True, False, False, False]])
    scores = torch.tensor([[5., 4., 3., 2., 1.], [2., 2., 1., 0., 0.]])
    picked = pick_first_n(survived, valid, scores, 3)
    assert picked.dtype == torch.long
    # Image 0: survivors 1 and 3, then the best suppressed candidate 0; sorted
    # by score. Image 1: two candidates for three slots, so 0 repeats; equal
    # scores keep their order.
    assert picked.tolist() == [[0, 1, 3], [0, 1, 0]]
