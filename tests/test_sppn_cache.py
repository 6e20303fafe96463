"""SPPNHead's cached priors and batched greedy NMS give exactly what the plain
per-image path gives: anchors from mmdet, candidates by lookup, top-k, decode,
torchvision ``nms`` per image, then the N picks. The reference below is that
path, written out without caches or batching."""
from unittest.mock import patch

import pytest
import torch
from test_sppn_head import _fpn_feats, _head
from torchvision.ops import nms

from mmdaf.models.dense_heads import sppn_head
from mmdaf.models.dense_heads.sppn_head import PRIOR_CACHE_SIZE

STRIDE8_ONLY = dict(type='AnchorGenerator', strides=[8], ratios=[0.5, 1.0, 2.0],
                    octave_base_scale=1.25, scales_per_octave=2, center_offset=0.5)


# ---------------------------------------------------------------- reference
def ref_candidates(head, anchors, img_shape, object_mask, num_imgs):
    """(B, M) candidate mask: centre in the mask (nearest cell), all anchors
    for an image that keeps none."""
    keep = torch.ones(num_imgs, anchors.shape[0], dtype=torch.bool)
    if object_mask is not None:
        mask = object_mask[:, 0].bool()
        mask_h, mask_w = mask.shape[-2:]
        centre_x = (anchors[:, 0] + anchors[:, 2]) / 2
        centre_y = (anchors[:, 1] + anchors[:, 3]) / 2
        cols = (centre_x * mask_w / img_shape[1]).floor().long().clamp(0, mask_w - 1)
        rows = (centre_y * mask_h / img_shape[0]).floor().long().clamp(0, mask_h - 1)
        keep &= mask[:, rows, cols]
    return keep | ~keep.any(dim=1, keepdim=True)


def ref_dense(head, feats, img_shape, object_mask):
    """Uncached anchors (mmdet ``grid_priors``), scores, deltas, candidates."""
    scores_per_level, deltas_per_level = head(feats)
    num_imgs = scores_per_level[0].shape[0]
    anchors = torch.cat(head.prior_generator.grid_priors(
        [s.shape[-2:] for s in scores_per_level], dtype=scores_per_level[0].dtype,
        device='cpu'))
    scores = torch.cat([s.permute(0, 2, 3, 1).reshape(num_imgs, -1)
                        for s in scores_per_level], dim=1)
    deltas = torch.cat([d.permute(0, 2, 3, 1).reshape(num_imgs, -1, 4)
                        for d in deltas_per_level], dim=1)
    return anchors, scores, deltas, ref_candidates(head, anchors, img_shape,
                                                   object_mask, num_imgs)


def ref_decode(head, anchors, deltas, index, img_shape):
    """(K, 4) boxes of one image's anchors at ``index`` (K,)."""
    return head.bbox_coder.decode(anchors[index], deltas[index], max_shape=img_shape)


def ref_pick(num_parts, kept, valid, scores):
    """N positions of one image's top-k list: NMS survivors, then suppressed
    candidates, then the rest, each in list order; wrapped round the
    candidate count; finally sorted by score (stable)."""
    kept = kept.tolist()
    valid_pos = valid.nonzero().squeeze(1).tolist()
    order = kept + [p for p in valid_pos if p not in kept] + [
        p for p in range(len(valid)) if p not in valid_pos]
    num_valid = max(len(valid_pos), 1)
    picked = torch.tensor([order[i % num_valid] for i in range(num_parts)])
    by_score = torch.sort(scores[picked], descending=True, stable=True).indices
    return picked[by_score]


def ref_propose(head, feats, img_shape, object_mask=None, dense=None):
    """:meth:`SPPNHead.propose`, one image at a time, NMS by torchvision."""
    if dense is None:
        dense = ref_dense(head, feats, img_shape, object_mask)
    anchors, scores, deltas, is_candidate = dense
    num_topk = min(head.pre_nms_topk, anchors.shape[0])
    ranking = scores.detach().masked_fill(~is_candidate, float('-inf'))
    topk_idx = ranking.topk(num_topk, dim=1).indices  # batched, as the head
    all_boxes, all_scores = [], []
    for img in range(scores.shape[0]):
        index = topk_idx[img]
        valid = is_candidate[img, index]
        boxes = ref_decode(head, anchors, deltas[img], index, img_shape)
        valid_pos = valid.nonzero().squeeze(1)
        kept = valid_pos[nms(boxes.detach()[valid_pos].float(),
                             scores[img, index].detach()[valid_pos].float(),
                             head.nms_iou_thr)]
        topk_scores = scores[img].gather(0, index)
        picked = ref_pick(head.num_parts, kept, valid, topk_scores.detach())
        all_boxes.append(boxes[picked])
        all_scores.append(topk_scores[picked])
    return torch.stack(all_boxes), torch.stack(all_scores)


def ref_propose_and_sample(head, feats, img_shape, object_mask, generator):
    """Reference proposals, then ``rank_samples`` anchors drawn among the
    candidates by ``torch.multinomial``, from one dense pass."""
    dense = ref_dense(head, feats, img_shape, object_mask)
    boxes, scores = ref_propose(head, feats, img_shape, object_mask, dense)
    anchors, dense_scores, deltas, is_candidate = dense
    num = head.rank_samples
    enough = bool((is_candidate.sum(dim=1) >= num).all())
    picked = torch.multinomial(is_candidate.float(), num, replacement=not enough,
                               generator=generator)
    sample_boxes = head.bbox_coder.decode(
        anchors[picked].reshape(-1, 4),
        deltas.gather(1, picked[..., None].expand(-1, -1, 4)).reshape(-1, 4),
        max_shape=img_shape).reshape(len(picked), num, 4)
    return boxes, scores, sample_boxes, dense_scores.gather(1, picked)


# -------------------------------------------------------------------- inputs
def make_mask(kind, batch, img_shape):
    """Object masks on the stride-8 grid (or a coarser one): none, random,
    a single cell in image 0 only (fewer candidates than N there), coarse."""
    grid = (-(-img_shape[0] // 8), -(-img_shape[1] // 8))
    generator = torch.Generator().manual_seed(1)
    if kind == 'none':
        return None
    if kind == 'random':
        return torch.rand(batch, 1, *grid, generator=generator) > 0.5
    if kind == 'one_cell':
        mask = torch.zeros(batch, 1, *grid, dtype=torch.bool)
        mask[0, 0, 2, 3] = True
        return mask
    return torch.rand(batch, 1, 3, 5, generator=generator) > 0.3


def head_and_feats(head_kwargs, img_shape, batch=3, seed=0):
    torch.manual_seed(seed)
    head = _head(**head_kwargs)
    feats = _fpn_feats(batch, *img_shape)
    if head.num_levels == 1:
        feats = feats[:1]
    return head, feats


HEADS = [
    dict(),  # three levels, box regression
    dict(regress_boxes=False),
    dict(num_parts=1, nms_iou_thr=0.3),  # 0.3 is not a float32
    dict(num_parts=8, pre_nms_topk=40),  # k below the NMS prefix
    dict(anchor_generator=STRIDE8_ONLY, regress_boxes=False, nms_iou_thr=0.7),
    dict(anchor_generator=STRIDE8_ONLY, nms_iou_thr=0.05),  # long suppression chains
]


def assert_same(actual, expected):
    for got, want in zip(actual, expected):
        assert torch.equal(got, want)


# --------------------------------------------------------------------- tests
@pytest.mark.parametrize('head_kwargs', HEADS)
@pytest.mark.parametrize('mask_kind', ['none', 'random', 'one_cell', 'coarse'])
@pytest.mark.parametrize('prefix_per_part', [1, 16])
def test_propose_equals_the_per_image_torchvision_path(head_kwargs, mask_kind,
                                                       prefix_per_part):
    """Bit for bit, on the short NMS prefix and on the fallback to the whole
    list (a prefix of N entries per image sends most batches there)."""
    head, feats = head_and_feats(head_kwargs, (64, 72))
    mask = make_mask(mask_kind, 3, (64, 72))
    with patch.object(sppn_head, 'NMS_PREFIX_PER_PART', prefix_per_part):
        boxes, scores = head.propose(feats, (64, 72), mask)
        again = head.propose(feats, (64, 72), mask)  # from the cache
    expected = ref_propose(head, feats, (64, 72), mask)
    assert_same((boxes, scores), expected)
    assert_same(again, expected)


def test_both_nms_routes_are_taken():
    """The prefix alone when it holds N survivors per image, the whole list
    when an image has fewer candidates than N."""
    head, feats = head_and_feats(dict(), (64, 72))
    lengths = []
    with patch.object(head, '_nms_survivors', wraps=head._nms_survivors) as nms_call:
        head.propose(feats, (64, 72))
        lengths.append([call.args[2].shape[1] for call in nms_call.call_args_list])
        nms_call.reset_mock()
        head.propose(feats, (64, 72), make_mask('one_cell', 3, (64, 72)))
        lengths.append([call.args[2].shape[1] for call in nms_call.call_args_list])
    prefix = sppn_head.NMS_PREFIX_PER_PART * head.num_parts
    num_anchors = head.num_anchors * sum(f.shape[-2] * f.shape[-1] for f in feats)
    assert lengths == [[prefix], [prefix, min(head.pre_nms_topk, num_anchors)]]


@pytest.mark.parametrize('num_topk', [30, 200])  # pairwise matrix, row by row
@pytest.mark.parametrize('iou_thr', [0.25, 0.3, 1.0])
def test_nms_survivors_are_torchvision_first_n(num_topk, iou_thr):
    """Hand-made boxes: clustered (long suppression chains), duplicates,
    zero-area boxes, IoU exactly at the threshold, invalid entries."""
    generator = torch.Generator().manual_seed(0)
    num_imgs, num_parts = 3, 6
    centres = torch.rand(num_imgs, num_topk, 2, generator=generator) * 20
    sides = 4 + torch.rand(num_imgs, num_topk, 2, generator=generator) * 12
    boxes = torch.cat([centres - sides / 2, centres + sides / 2], dim=-1).round()
    boxes[:, 5] = boxes[:, 4]  # a duplicate
    boxes[:, 7, 2] = boxes[:, 7, 0]  # zero width
    boxes[0, :2] = torch.tensor([[0., 0., 4., 4.], [0., 0., 4., 5.]])  # IoU 0.8
    boxes[1, :2] = torch.tensor([[0., 0., 4., 4.], [0., 0., 4., 16.]])  # IoU 0.25
    valid = torch.rand(num_imgs, num_topk, generator=generator) > 0.2
    valid[2, 3:] = False  # fewer candidates than N...
    valid[2, 0] = False  # ...after a non-candidate
    scores = torch.linspace(1, 0, num_topk).expand(num_imgs, -1)  # top-k order
    head = _head(num_parts=num_parts, nms_iou_thr=iou_thr)
    survived = head._nms_survivors(boxes, scores, valid)
    for img in range(num_imgs):
        valid_pos = valid[img].nonzero().squeeze(1)
        kept = valid_pos[nms(boxes[img, valid_pos], scores[img, valid_pos], iou_thr)]
        assert survived[img].nonzero().squeeze(1).tolist() == \
            sorted(kept[:num_parts].tolist())


def test_grid_anchors_are_cached_per_size_dtype_and_device():
    head = _head()
    sizes = [(8, 9), (4, 5), (2, 3)]
    anchors = head.grid_anchors(sizes, torch.float32, torch.device('cpu'))
    assert torch.equal(anchors, torch.cat(head.prior_generator.grid_priors(
        sizes, dtype=torch.float32, device='cpu')))
    assert head.grid_anchors([torch.Size(s) for s in sizes], torch.float32, 'cpu') \
        is anchors
    other_size = head.grid_anchors([(8, 8), (4, 4), (2, 2)], torch.float32, 'cpu')
    other_dtype = head.grid_anchors(sizes, torch.float64, 'cpu')
    other_device = head.grid_anchors(sizes, torch.float32, 'meta')
    assert other_size is not anchors and other_size.shape[0] == 6 * (64 + 16 + 4)
    assert other_dtype is not anchors and other_dtype.dtype == torch.float64
    assert torch.equal(other_dtype, torch.cat(head.prior_generator.grid_priors(
        sizes, dtype=torch.float64, device='cpu')))
    assert other_device is not anchors and other_device.device.type == 'meta'
    # The head's dense pass uses them: the same object on every call.
    feats = _fpn_feats(2, 64, 72)
    first = head.dense_scores(feats)[0]
    assert head.dense_scores(feats)[0] is first
    assert head.dense_scores(_fpn_feats(2, 64, 64))[0] is not first


@pytest.mark.parametrize('mask_kind', ['none', 'random'])
def test_same_grid_other_image_size_gets_its_own_candidates_and_boxes(mask_kind):
    """64 x 64 and 58 x 58 share the 8 x 8 stride-8 grid (the same anchors)
    but not the mask cell of each anchor centre, nor the clipping of the
    fixed boxes."""
    head, feats = head_and_feats(dict(anchor_generator=STRIDE8_ONLY, regress_boxes=False,
                                      num_parts=8), (64, 64))
    mask = make_mask(mask_kind, 3, (64, 64))
    for img_shape in [(64, 64), (58, 58), (64, 64)]:
        assert_same(head.propose(feats, img_shape, mask),
                    ref_propose(head, feats, img_shape, mask))
    small, large = (head._dense_candidates(feats, img_shape, mask)
                    for img_shape in [(58, 58), (64, 64)])
    assert small.anchors is large.anchors
    # Without a mask every anchor is a candidate at either size.
    assert torch.equal(small.is_candidate, large.is_candidate) == (mask is None)
    assert small.fixed_boxes.max() == 58 and large.fixed_boxes.max() > 58


def test_cache_stays_bounded():
    head = _head(anchor_generator=STRIDE8_ONLY, regress_boxes=False)
    for side in range(8, 8 + 8 * (PRIOR_CACHE_SIZE + 2), 8):
        head.propose(_fpn_feats(1, side, side)[:1], (side, side))
    assert len(head._prior_cache) == PRIOR_CACHE_SIZE


@pytest.mark.parametrize('head_kwargs', [dict(rank_samples=5),
                                         dict(anchor_generator=STRIDE8_ONLY,
                                              regress_boxes=False, rank_samples=7)])
@pytest.mark.parametrize('mask_kind', ['random', 'one_cell'])
def test_training_path_same_outputs_and_gradients(head_kwargs, mask_kind):
    """propose_and_sample with a fixed seed: the same proposals, samples and
    parameter gradients as the reference path."""
    head, feats = head_and_feats(head_kwargs, (64, 72))
    head.train()
    mask = make_mask(mask_kind, 3, (64, 72))
    results = []
    for propose in (head.propose_and_sample, None):
        torch.manual_seed(5)
        if propose is None:
            outputs = ref_propose_and_sample(head, feats, (64, 72), mask,
                                             torch.default_generator)
        else:
            outputs = propose(feats, (64, 72), mask)
        head.zero_grad(set_to_none=True)
        sum(out.float().pow(2).sum() for out in outputs).backward()
        grads = [p.grad.clone() for p in head.parameters() if p.grad is not None]
        results.append((outputs, grads))
    (outputs, grads), (ref_outputs, ref_grads) = results
    assert_same([o.detach() for o in outputs], [o.detach() for o in ref_outputs])
    assert len(grads) == len(ref_grads) > 0
    assert_same(grads, ref_grads)


def test_entries_made_in_inference_mode_serve_training():
    head, feats = head_and_feats(dict(rank_samples=3), (64, 72))
    with torch.inference_mode():
        head.propose(feats, (64, 72), make_mask('random', 3, (64, 72)))
    assert not any(value.is_inference() for value in head._prior_cache.values()
                   if isinstance(value, torch.Tensor))
    head.train()
    outputs = head.propose_and_sample(feats, (64, 72), make_mask('random', 3, (64, 72)))
    sum(out.sum() for out in outputs).backward()
    assert head.score_conv.weight.grad is not None
