"""Degenerate geometry: the complete DAF model still returns N boxes per image,
finite losses and finite gradients."""
import torch
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from test_daf_classifier import NUM_CLASSES, tiny_daf_cfg

SIZE = 64


def build():
    """The synthetic DAF with box regression on (the paper's SPPN, as in the
    CUB configs), since regressed boxes are the ones that can degenerate, and
    the concentrate loss, so that the degenerate boxes' part images are made
    and trained on (as in the CUB configs)."""
    torch.manual_seed(0)
    cfg = tiny_daf_cfg()
    cfg.sppn_head.regress_boxes = True
    cfg.loss_concentrate = dict(type='ConcentrateLoss', top_m=3)
    return MODELS.build(cfg)


def make_batch(height=SIZE, width=SIZE, batch_size=2):
    torch.manual_seed(1)
    return (torch.randn(batch_size, 3, height, width),
            [DataSample().set_gt_label(i % NUM_CLASSES) for i in range(batch_size)])


def check_n_boxes_finite_losses(model, inputs, data_samples) -> torch.Tensor:
    """Train step and prediction; returns the predicted boxes (B, N, 4)."""
    num_parts = model.sppn_head.num_parts
    height, width = inputs.shape[-2:]
    model.train()
    losses = model(inputs, data_samples, mode='loss')
    loss_terms = {k: v for k, v in losses.items() if 'loss' in k}
    assert len(loss_terms) == 10
    for name, value in loss_terms.items():
        assert torch.isfinite(value).all(), (name, value)
    sum(loss_terms.values()).backward()
    for name, param in model.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), name

    model.eval()
    with torch.no_grad():
        samples = model(inputs, mode='predict')
    boxes = torch.stack([sample.part_boxes for sample in samples])
    assert boxes.shape == (inputs.shape[0], num_parts, 4)
    assert torch.isfinite(boxes).all()
    assert (boxes[..., 0] >= 0).all() and (boxes[..., 2] <= width).all()
    assert (boxes[..., 1] >= 0).all() and (boxes[..., 3] <= height).all()
    for sample in samples:
        assert torch.isfinite(sample.pred_score).all()
        assert sample.part_scores.shape == (num_parts, )
    return boxes


def test_all_zero_features_give_the_whole_image_as_object():
    model = build()
    with torch.no_grad():
        for param in model.backbone.parameters():
            param.zero_()
    inputs, samples = make_batch()
    with torch.no_grad():
        student = model.run_student(inputs)
    assert all(float(feat.abs().max()) == 0 for feat in student.feats)
    assert torch.equal(student.heatmap, torch.ones_like(student.heatmap))
    assert student.object_mask.all()
    assert student.object_area.tolist() == [SIZE * SIZE] * 2
    check_n_boxes_finite_losses(model, inputs, samples)


def test_all_equal_features():
    model = build()
    real_forward = model.backbone.forward
    # Every position of every stage holds the same value (graph kept).
    model.backbone.forward = lambda x: tuple(f * 0 + 0.5 for f in real_forward(x))
    inputs, samples = make_batch()
    with torch.no_grad():
        student = model.run_student(inputs)
    assert torch.equal(student.heatmap, torch.ones_like(student.heatmap))
    assert student.object_mask.all()
    check_n_boxes_finite_losses(model, inputs, samples)


def shift_all_boxes_right(model, shift=1000.0):
    """Deltas whose dx throws every box past the right edge: after clipping to
    the image every box is x1 = x2 = W, zero width."""
    reg_conv = model.sppn_head.reg_conv
    real_forward = reg_conv.forward
    dx = torch.zeros(reg_conv.out_channels, 1, 1)
    dx[0::4] = shift
    reg_conv.forward = lambda x: real_forward(x) * 0 + dx


def test_zero_width_boxes():
    model = build()
    shift_all_boxes_right(model)
    inputs, samples = make_batch()
    with torch.no_grad():
        student = model.run_student(inputs)
    widths = student.boxes[..., 2] - student.boxes[..., 0]
    assert torch.equal(widths, torch.zeros_like(widths))
    assert (student.boxes[..., 0] == SIZE).all()
    boxes = check_n_boxes_finite_losses(model, inputs, samples)
    assert (boxes[..., 2] - boxes[..., 0] == 0).all()


def one_pixel_mask(batch_size, height, width):
    """A mask at input resolution whose only pixel (0, 0) holds no anchor
    centre (the finest anchors are centred at 4, 12, ... px)."""
    mask = torch.zeros(batch_size, 1, height, width, dtype=torch.bool)
    mask[:, :, 0, 0] = True
    return mask


def test_all_anchors_outside_the_mask_fall_back_to_all_anchors():
    model = build().eval()
    inputs, _ = make_batch()
    with torch.no_grad():
        fpn = model.sppn_neck(model.backbone(inputs))
        anchors = torch.cat(model.sppn_head.prior_generator.grid_priors(
            [f.shape[-2:] for f in fpn], device=inputs.device))
        mask = one_pixel_mask(2, SIZE, SIZE)
        candidates = model.sppn_head.anchor_candidates(anchors, (SIZE, SIZE), mask, 2)
        boxes, scores = model.sppn_head.propose(fpn, (SIZE, SIZE), mask)
        free_boxes, free_scores = model.sppn_head.propose(fpn, (SIZE, SIZE), None)
    assert candidates.all()  # no anchor inside -> all anchors are candidates
    assert boxes.shape == (2, model.sppn_head.num_parts, 4)
    assert torch.equal(boxes, free_boxes) and torch.equal(scores, free_scores)


def patch_object_mask(model, make_mask):
    """The location heatmap as usual, but its object mask replaced."""
    heatmap_module = model.location_heatmap
    real_forward = heatmap_module.forward

    def forward(feats, img_shape):
        out = real_forward(feats, img_shape)
        mask = make_mask(out.heatmap.shape[0], *img_shape)
        return out._replace(object_mask=mask)

    heatmap_module.forward = forward


def test_all_anchors_outside_the_mask_in_the_model():
    model = build()
    patch_object_mask(model, one_pixel_mask)
    check_n_boxes_finite_losses(model, *make_batch())


def test_fewer_than_n_boxes_survive_nms():
    model = build()
    head = model.sppn_head
    # Boxes = anchors; the candidates are the anchors centred in one 8 px cell,
    # which overlap each other above the NMS threshold.
    real_reg = head.reg_conv.forward
    head.reg_conv.forward = lambda x: real_reg(x) * 0

    def cell_mask(batch_size, height, width):
        mask = torch.zeros(batch_size, 1, height // 8, width // 8, dtype=torch.bool)
        mask[:, :, 3, 3] = True  # pixels [24, 32) x [24, 32)
        return mask

    patch_object_mask(model, cell_mask)
    survivors = []
    real_nms = head._nms_survivors

    def counting_nms(boxes, scores, valid):
        survived = real_nms(boxes, scores, valid)
        survivors.append(survived.sum(dim=1).tolist())
        return survived

    head._nms_survivors = counting_nms
    inputs, samples = make_batch()
    boxes = check_n_boxes_finite_losses(model, inputs, samples)
    assert survivors and all(0 < count < head.num_parts
                             for counts in survivors for count in counts), survivors
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2
    assert ((centres >= 24) & (centres < 32)).all()


def test_input_size_not_a_multiple_of_32(height=70, width=90):
    model = build()
    inputs, samples = make_batch(height, width)
    check_n_boxes_finite_losses(model, inputs, samples)
    with torch.no_grad():
        sample = model(inputs, mode='predict')[0]
    assert sample.heatmap.shape == (1, -(-height // 8), -(-width // 8))
