"""make_part_images with the other boxes blurred (``other_boxes='blur'``)
and PartImageGenerator's option for it, on hand-made images."""
import pytest
import torch
from mmpretrain.registry import MODELS

import mmdaf  # noqa: F401  (registers PartImageGenerator)
from mmdaf.models.utils.part_images import gaussian_blur, make_part_images


def test_other_boxes_blur_makes_part_images_differ_only_in_the_kept_box():
    torch.manual_seed(0)
    imgs = torch.randn(1, 3, 16, 16)
    boxes = torch.tensor([[[0., 0., 8., 8.], [8., 8., 16., 16.]]])
    parts = make_part_images(imgs, boxes, blur_sigma=1.0, other_boxes='blur')
    blurred = gaussian_blur(imgs, 1.0)
    # Part image 0: box 0 sharp, box 1 blurred like the rest; and vice versa.
    torch.testing.assert_close(parts[0, :, :8, :8], imgs[0, :, :8, :8])
    torch.testing.assert_close(parts[0, :, 8:, 8:], blurred[0, :, 8:, 8:])
    torch.testing.assert_close(parts[1, :, 8:, 8:], imgs[0, :, 8:, 8:])
    torch.testing.assert_close(parts[1, :, :8, :8], blurred[0, :, :8, :8])
    # Outside both boxes the two part images are the same blur.
    torch.testing.assert_close(parts[0, :, :8, 8:], blurred[0, :, :8, 8:])
    torch.testing.assert_close(parts[1, :, :8, 8:], blurred[0, :, :8, 8:])
    with pytest.raises(ValueError, match="other_boxes must be one of .*got 'zero'"):
        make_part_images(imgs, boxes, blur_sigma=1.0, other_boxes='zero')


def test_generator_passes_other_boxes_on_and_draws_no_noise_for_blur():
    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 16, 16)
    boxes = torch.tensor([[[0., 0., 8., 8.], [8., 8., 16., 16.]]] * 2)
    generator = MODELS.build(dict(type='PartImageGenerator', blur_sigma_ratio=1 / 16,
                                  other_boxes='blur'))
    assert generator.other_boxes == 'blur'
    state = torch.get_rng_state()
    parts = generator(imgs, boxes)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(parts, make_part_images(imgs, boxes, blur_sigma=1.0,
                                                       other_boxes='blur'))
    with pytest.raises(ValueError, match="other_boxes must be one of .*got 'zero'"):
        MODELS.build(dict(type='PartImageGenerator', other_boxes='zero'))
