import math

import pytest
import torch
import torch.nn.functional as F

from mmdaf.models.utils import (
    PartImageGenerator,
    boxes_to_saliency_mask,
    crop_around_boxes,
    make_part_images,
)
from mmdaf.models.utils.part_images import (
    boxes_to_pixel_masks,
    gaussian_blur,
    gaussian_kernel1d,
    reflect_blur_matrix,
)

# Two images of 24 x 32, N = 3 boxes each; image 0's boxes 0 and 1 overlap.
BOXES = torch.tensor([
    [[2.0, 3.0, 10.0, 9.0], [6.0, 5.0, 14.0, 12.0], [20.0, 15.0, 30.0, 22.0]],
    [[0.0, 0.0, 5.0, 5.0], [10.0, 10.0, 12.0, 24.0], [25.0, 1.0, 32.0, 8.0]],
])


def _box_pixels(box, height, width):
    """Hand rule: integer boxes cover rows y1:y2, cols x1:x2."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    x1, y1, x2, y2 = (int(v) for v in box)
    mask[y1:y2, x1:x2] = True
    return mask


def test_kept_box_is_bit_exact_and_every_other_pixel_changes():
    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 24, 32)
    parts = make_part_images(imgs, BOXES, blur_sigma=2.0)
    assert parts.shape == (6, 3, 24, 32)
    for b in range(2):
        for i in range(3):
            part = parts[b * 3 + i]  # image-major order
            kept = _box_pixels(BOXES[b, i], 24, 32)
            assert torch.equal(part[:, kept], imgs[b][:, kept])
            assert (part[:, ~kept] != imgs[b][:, ~kept]).all()


def test_noise_and_blur_regions_hold_the_expected_values():
    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 24, 32)
    parts = make_part_images(imgs, BOXES, blur_sigma=1.5, noise_std=0.5,
                             generator=torch.Generator().manual_seed(7))
    noise = torch.randn(imgs.shape, generator=torch.Generator().manual_seed(7))
    blurred = gaussian_blur(imgs, 1.5)
    # Image 0, part 0: box 0 kept; box 1 minus box 0 noised; the rest blurred.
    kept = _box_pixels(BOXES[0, 0], 24, 32)
    others = _box_pixels(BOXES[0, 1], 24, 32) | _box_pixels(BOXES[0, 2], 24, 32)
    noised = others & ~kept
    blurred_region = ~(kept | others)
    part = parts[0]
    assert torch.equal(part[:, noised], (imgs[0] + 0.5 * noise[0])[:, noised])
    assert torch.equal(part[:, blurred_region], blurred[0][:, blurred_region])
    # The overlap of boxes 0 and 1 is kept in parts 0 and 1, noised in part 2.
    assert torch.equal(parts[0][:, 5:9, 6:10], imgs[0][:, 5:9, 6:10])
    assert torch.equal(parts[1][:, 5:9, 6:10], imgs[0][:, 5:9, 6:10])
    assert torch.equal(parts[2][:, 5:9, 6:10],
                       (imgs[0] + 0.5 * noise[0])[:, 5:9, 6:10])


def test_gaussian_blur_is_separable_normalised_and_reflect_padded():
    sigma = 1.2
    radius = math.ceil(3 * sigma)  # 4
    kernel = gaussian_kernel1d(sigma, radius, torch.float64, torch.device('cpu'))
    assert kernel.shape == (2 * radius + 1, )
    assert kernel.sum().item() == pytest.approx(1.0)
    # A centred impulse blurs into the outer product of the 1-D kernel.
    impulse = torch.zeros(1, 2, 15, 15, dtype=torch.float64)
    impulse[:, :, 7, 7] = 1.0
    blurred = gaussian_blur(impulse, sigma)
    expected = torch.outer(kernel, kernel)
    assert torch.allclose(blurred[0, 1, 3:12, 3:12], expected)
    assert blurred[0, 1, :3].abs().max() == 0
    # Reflect padding keeps a constant image constant up to the border.
    flat = torch.full((1, 3, 10, 12), 2.5, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(flat, 3.0), flat)
    assert gaussian_blur(flat, 0.0) is flat


@pytest.mark.parametrize('shape,sigma', [((2, 3, 9, 14), 1.2), ((1, 2, 5, 6), 3.0)])
def test_gaussian_blur_equals_reflect_padded_depthwise_convolutions(shape, sigma):
    # The reference: reflect padding and one depthwise conv per direction.
    torch.manual_seed(0)
    imgs = torch.randn(*shape, dtype=torch.float64)
    channels, height, width = shape[1:]
    radius = min(math.ceil(3 * sigma), min(height, width) - 1)  # (4, 14) / (4, 5)
    kernel = gaussian_kernel1d(sigma, radius, torch.float64, torch.device('cpu'))
    rows = F.conv2d(F.pad(imgs, (0, 0, radius, radius), mode='reflect'),
                    kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    expected = F.conv2d(F.pad(rows, (radius, radius, 0, 0), mode='reflect'),
                        kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1),
                        groups=channels)
    blurred = gaussian_blur(imgs, sigma)
    assert blurred.shape == imgs.shape and blurred.dtype == torch.float64
    torch.testing.assert_close(blurred, expected, rtol=0, atol=1e-12)


def test_reflect_blur_matrix_folds_the_taps_at_the_borders():
    # Radius 1, kernel (a, b, a): output 0 reads indices -1, 0, 1 = 1, 0, 1.
    matrix = reflect_blur_matrix(4, 1.0, 1, torch.float64, torch.device('cpu'))
    a, b, _ = gaussian_kernel1d(1.0, 1, torch.float64, torch.device('cpu')).tolist()
    expected = torch.tensor([[b, a, 0, 0], [2 * a, b, a, 0], [0, a, b, 2 * a],
                             [0, 0, a, b]], dtype=torch.float64)
    torch.testing.assert_close(matrix, expected, rtol=0, atol=1e-15)
    # Every output's weights sum to 1.
    torch.testing.assert_close(matrix.sum(dim=0), torch.ones(4, dtype=torch.float64))


def test_blur_matrix_made_under_inference_mode_serves_a_training_step():
    # An evaluation under inference mode fills the cache first (size 7 is
    # used by no other test); a later differentiable blur reuses the entry.
    with torch.inference_mode():
        gaussian_blur(torch.randn(1, 1, 7, 7), 1.0)
    imgs = torch.randn(1, 1, 7, 7, requires_grad=True)
    gaussian_blur(imgs, 1.0).sum().backward()
    # Each output's weights sum to 1, so with reflect padding every input
    # pixel's gradient is the sum of its column's weights: positive.
    assert imgs.grad.shape == (1, 1, 7, 7) and bool((imgs.grad > 0).all())


def test_saliency_mask_is_the_union_with_pixel_centre_rule():
    mask = boxes_to_saliency_mask(BOXES, (24, 32))
    assert mask.shape == (2, 1, 24, 32) and mask.dtype == torch.float32
    expected = _box_pixels(BOXES[0, 0], 24, 32) | _box_pixels(
        BOXES[0, 1], 24, 32) | _box_pixels(BOXES[0, 2], 24, 32)
    assert torch.equal(mask[0, 0], expected.float())
    # 48 + 56 + 70 pixels minus the 4 x 4 overlap.
    assert mask[0].sum().item() == 48 + 56 + 70 - 16
    # Fractional box: pixel centres 0.5 and 1.5 lie in [0.4, 1.6), 2.5 does not.
    frac = boxes_to_saliency_mask(torch.tensor([[[0.4, 0.0, 1.6, 1.0]]]), (2, 4))
    assert frac[0, 0].tolist() == [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize('num_boxes', [0, 1, 12])
def test_saliency_mask_equals_the_union_of_the_pixel_masks(dtype, num_boxes):
    """The row-by-column product gives the union of the (B, N, H, W) masks:
    fractional, zero-width, out-of-image and many overlapping boxes."""
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(3, num_boxes, 2, 2, generator=generator) * 40 - 4
    boxes = torch.cat([corners.min(dim=2).values, corners.max(dim=2).values], -1)
    if num_boxes:
        boxes[0, 0, 2] = boxes[0, 0, 0]  # zero width
        boxes[1, :] = torch.tensor([3.2, 4.7, 20.5, 18.0])  # all on one spot
    boxes = boxes.to(dtype)
    mask = boxes_to_saliency_mask(boxes, (24, 32))
    expected = boxes_to_pixel_masks(boxes, (24, 32)).any(dim=1, keepdim=True)
    assert mask.dtype == dtype and torch.equal(mask, expected.to(dtype))


def test_generator_module_uses_ratio_of_longer_side_and_detaches_boxes():
    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 24, 32)
    boxes = BOXES.clone().requires_grad_()
    module_out = PartImageGenerator(blur_sigma_ratio=1 / 16, noise_std=1.0)(
        imgs, boxes, generator=torch.Generator().manual_seed(3))
    direct = make_part_images(imgs, BOXES, blur_sigma=32 / 16, noise_std=1.0,
                              generator=torch.Generator().manual_seed(3))
    assert torch.equal(module_out, direct)
    assert not module_out.requires_grad


def test_zero_width_box_keeps_nothing():
    torch.manual_seed(0)
    imgs = torch.randn(1, 3, 16, 16)
    boxes = torch.tensor([[[4.0, 4.0, 4.0, 12.0], [0.0, 0.0, 8.0, 8.0]]])
    parts = make_part_images(imgs, boxes, blur_sigma=1.0)
    assert (parts[0] != imgs[0]).all()
    assert torch.equal(parts[1][:, :8, :8], imgs[0][:, :8, :8])


def test_bad_inputs_raise():
    imgs = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match='boxes must be'):
        make_part_images(imgs, torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match='batch size'):
        make_part_images(imgs, torch.zeros(3, 2, 4), 1.0)
    with pytest.raises(ValueError, match='sigma'):
        make_part_images(imgs, torch.zeros(2, 2, 4), -1.0)
    with pytest.raises(ValueError, match='noise_std'):
        PartImageGenerator(noise_std=-0.1)


def test_crop_around_boxes_centres_the_window_and_shifts_it_inside():
    imgs = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    # Box centred at (3, 3): window rows/cols 1..4. Box at the bottom-right
    # corner (centre 7, 7): the window would start at 5 and is shifted to 4.
    boxes = torch.tensor([[2., 2., 4., 4.], [6., 6., 8., 8.]])
    crops = crop_around_boxes(imgs, boxes, 4)
    assert crops.shape == (2, 1, 4, 4) and crops.dtype == torch.float32
    assert torch.equal(crops[0, 0], imgs[0, 0, 1:5, 1:5])
    assert torch.equal(crops[1, 0], imgs[1, 0, 4:8, 4:8])
    # A window larger than the image keeps the whole image.
    assert torch.equal(crop_around_boxes(imgs, boxes, 20), imgs)
    with pytest.raises(ValueError, match='crop size must be > 0, got 0'):
        crop_around_boxes(imgs, boxes, 0)
    with pytest.raises(ValueError, match=r'boxes must be \(M, 4\) with M = 2'):
        crop_around_boxes(imgs, boxes[:1], 4)


@pytest.mark.parametrize('options', [dict(), dict(scale=0.5)])
def test_single_box_images_equal_the_generator_on_each_box_alone(options):
    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 24, 32)
    generator = PartImageGenerator(blur_sigma_ratio=1 / 16, **options)
    parts = generator.single_box_images(imgs, BOXES)
    expected = torch.cat([
        generator(imgs[b:b + 1], BOXES[b:b + 1, k:k + 1])
        for b in range(2) for k in range(3)])
    assert parts.shape == expected.shape and parts.dtype == torch.float32
    # Bit-exact, the blur computed once per image instead of per box.
    assert torch.equal(parts, expected)


@pytest.mark.parametrize('options', [dict(), dict(scale=0.5)])
def test_single_box_windows_equal_the_cropped_single_box_images(options):
    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 24, 32)
    # Fractional boxes, one against the right border (its window is shifted).
    boxes = torch.cat([BOXES, torch.tensor([[[27.3, 1.6, 32.0, 9.5]],
                                            [[0.0, 20.2, 5.5, 24.0]]])], dim=1)
    generator = PartImageGenerator(blur_sigma_ratio=1 / 16, **options)
    windows = generator.single_box_windows(imgs, boxes, 10)
    expected = crop_around_boxes(generator.single_box_images(imgs, boxes),
                                 boxes.reshape(-1, 4), 10)
    assert windows.shape == (8, 3, 10, 10) and windows.dtype == torch.float32
    # Composed in the windows only (at scale 1): the same pixels, bit for bit.
    assert torch.equal(windows, expected)
    if options:
        return
    # Box 3 of image 0 covers rows 2..8 and columns 27..31 (pixel centres);
    # its window, shifted inside the image, spans rows 1..10, columns 22..31.
    assert torch.equal(windows[3, :, 1:8, 5:10], imgs[0, :, 2:9, 27:32])
    blurred = gaussian_blur(imgs, 2.0)
    assert torch.equal(windows[3, :, 0], blurred[0, :, 1, 22:32])
    assert torch.equal(windows[3, :, 8:, 5:], blurred[0, :, 9:11, 27:32])
    with pytest.raises(ValueError, match='boxes has batch size 1, imgs has 2'):
        generator.single_box_windows(imgs, boxes[:1], 10)
