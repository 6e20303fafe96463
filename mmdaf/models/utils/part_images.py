"""Part images for evaluating part proposals (paper Sec. 3.3, Fig. 2).

For each of the N boxes of an image, one part image keeps that box's pixels,
adds noise to the other N-1 boxes and blurs everything else, so that the
classifier sees the part with its (blurred) context.
"""
import functools
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from torch import Tensor

OTHER_BOX_MODES = ('noise', 'blur')


def gaussian_kernel1d(sigma: float, radius: int, dtype: torch.dtype,
                      device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian of length ``2 * radius + 1``."""
    offsets = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (offsets / sigma)**2)
    return kernel / kernel.sum()


def gaussian_blur(imgs: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a (B, C, H, W) batch, reflect padding.

    The kernel radius is ``ceil(3 * sigma)``, capped at ``min(H, W) - 1`` because
    reflect padding cannot be wider than the image. ``sigma == 0`` returns the
    input unchanged.

    Args:
        imgs (Tensor): (B, C, H, W) float images.
        sigma (float): standard deviation in pixels, >= 0.

    Returns:
        Tensor: (B, C, H, W) blurred images, same dtype and device.
    """
    if sigma < 0:
        raise ValueError(f'sigma must be >= 0, got {sigma}')
    height, width = imgs.shape[-2:]
    radius = min(math.ceil(3 * sigma), min(height, width) - 1)
    if sigma == 0 or radius < 1:
        return imgs
    # In float32 with autocast off: a depthwise conv in fp16 is very slow on
    # CPU, and the blur has no weights to gain from low precision.
    with torch.autocast(device_type=imgs.device.type, enabled=False):
        full = imgs if imgs.dtype in (torch.float32, torch.float64) else imgs.float()
        blurred = _separable_blur(full, sigma, radius)
    return blurred.to(imgs.dtype)


def _separable_blur(imgs: Tensor, sigma: float, radius: int) -> Tensor:
    height, width = imgs.shape[-2:]
    blur_cols = reflect_blur_matrix(width, sigma, radius, imgs.dtype, imgs.device)
    blur_rows = reflect_blur_matrix(height, sigma, radius, imgs.dtype, imgs.device)
    # Two matrix products rather than two depthwise convolutions: on CPU the
    # depthwise convs were 5-7x slower (2 x 3 x 128^2: 4.2 ms against 0.6 ms;
    # 8 x 3 x 448^2: 381 ms against 80 ms).
    return blur_rows.T @ (imgs @ blur_cols)


@functools.lru_cache(maxsize=32)
def reflect_blur_matrix(size: int, sigma: float, radius: int, dtype: torch.dtype,
                        device: torch.device) -> Tensor:
    """The 1-D Gaussian blur of a length-``size`` signal as a matrix.

    ``signal @ matrix`` convolves the signal with :func:`gaussian_kernel1d`
    under reflect padding (index -1 reads index 1, index ``size`` reads
    ``size - 2``), as ``F.pad(..., mode='reflect')`` followed by a
    convolution would. Cached: it depends only on its arguments. Built
    outside inference mode, so that a matrix first made in an evaluation
    under ``torch.inference_mode`` still serves a later training step.

    Args:
        size (int): signal length, > ``radius``.
        sigma (float): standard deviation in samples, > 0.
        radius (int): kernel radius, 1 <= radius < size.
        dtype (torch.dtype): matrix dtype.
        device (torch.device): matrix device.

    Returns:
        Tensor: (size, size); column j holds the weights of output j.
    """
    with torch.inference_mode(False), torch.no_grad():
        return _reflect_blur_matrix(size, sigma, radius, dtype, device)


def _reflect_blur_matrix(size: int, sigma: float, radius: int, dtype: torch.dtype,
                         device: torch.device) -> Tensor:
    kernel = gaussian_kernel1d(sigma, radius, dtype, device)
    outputs = torch.arange(size, device=device)[:, None]
    sources = (outputs + torch.arange(-radius, radius + 1, device=device)).abs()
    sources = torch.where(sources > size - 1, 2 * (size - 1) - sources, sources)
    matrix = torch.zeros(size, size, dtype=dtype, device=device)
    # Near a border two taps can read the same source: accumulate them.
    matrix.index_put_((sources, outputs.expand_as(sources)), kernel.expand_as(sources),
                      accumulate=True)
    return matrix


def boxes_to_pixel_masks(boxes: Tensor, img_shape: Tuple[int, int]) -> Tensor:
    """Which pixels each box covers.

    Pixel (y, x) belongs to box (x1, y1, x2, y2) when its centre (x + 0.5, y + 0.5)
    lies in [x1, x2) x [y1, y2); a box therefore covers exactly the pixels of
    its integer span, and a zero-width box covers none.

    Args:
        boxes (Tensor): (B, N, 4) xyxy in input pixels; detached here.
        img_shape (Tuple[int, int]): (H, W).

    Returns:
        Tensor: (B, N, H, W) bool.
    """
    in_rows, in_cols = _box_rows_and_cols(boxes, img_shape)
    return in_rows[..., :, None] & in_cols[..., None, :]


def _box_rows_and_cols(boxes: Tensor, img_shape: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """The pixel rows (B, N, H) and columns (B, N, W), bool, each box spans
    (the pixel-centre rule of :func:`boxes_to_pixel_masks`)."""
    _check_boxes(boxes)
    height, width = img_shape
    boxes = boxes.detach()
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    x1, y1, x2, y2 = (boxes[..., k, None] for k in range(4))  # each (B, N, 1)
    in_cols = (xs >= x1) & (xs < x2)  # (B, N, W)
    in_rows = (ys >= y1) & (ys < y2)  # (B, N, H)
    return in_rows, in_cols


def boxes_to_saliency_mask(boxes: Tensor, img_shape: Tuple[int, int]) -> Tensor:
    """Union of the N boxes as a binary image (the teacher's extra channel).

    Args:
        boxes (Tensor): (B, N, 4) xyxy in input pixels.
        img_shape (Tuple[int, int]): (H, W) of the input.

    Returns:
        Tensor: (B, 1, H, W) float in {0, 1}, dtype of ``boxes``.
    """
    in_rows, in_cols = _box_rows_and_cols(boxes, img_shape)
    # Pixel (y, x) is in the union when some box spans both row y and column x:
    # a (B, H, N) x (B, N, W) product counts those boxes without building the
    # (B, N, H, W) masks. The counts are small integers, exact in float32
    # (autocast off keeps them so); clamping them at 1 is the union, cheaper
    # than a comparison and a bool-to-float copy.
    with torch.autocast(device_type=boxes.device.type, enabled=False):
        covering = torch.bmm(in_rows.transpose(1, 2).float(), in_cols.float())
    return covering.clamp_(max=1)[:, None].to(boxes.dtype)


def make_part_images(imgs: Tensor,
                     boxes: Tensor,
                     blur_sigma: float,
                     noise_std: float = 1.0,
                     generator: Optional[torch.Generator] = None,
                     other_boxes: str = 'noise') -> Tensor:
    """Build the N part images of every image in one batched composition.

    Part image ``b * N + i`` is image ``b`` with:

    * the pixels of box ``i`` unchanged (bit-exact copies of ``imgs``);
    * the pixels of the other N-1 boxes (outside box ``i``) replaced by
      ``img + noise``, noise ~ N(0, noise_std^2) in normalised-image units;
    * every other pixel Gaussian-blurred with ``blur_sigma`` (pixels).

    The blur and the noise are computed once per image and shared by its N
    part images. Box pixel masks are not differentiable (boxes are detached);
    gradient reaches ``imgs`` only through the composed pixel values.

    Args:
        imgs (Tensor): (B, 3, H, W) normalised images.
        boxes (Tensor): (B, N, 4) xyxy in input pixels.
        blur_sigma (float): Gaussian blur sigma in pixels, >= 0.
        noise_std (float): std of the additive noise, >= 0. Defaults to 1.0.
        generator (torch.Generator, optional): generator on ``imgs.device``
            for the noise, for reproducibility.
        other_boxes (str): ``'noise'`` (the paper's composition, above) or
            ``'blur'``: the other N-1 boxes are blurred like the context, so
            that part image i differs from the others only in box i.

    Returns:
        Tensor: (B * N, 3, H, W) part images, image-major.
    """
    if not isinstance(imgs, Tensor) or imgs.dim() != 4:
        raise ValueError(f'imgs must be a (B, C, H, W) tensor, got '
                         f'{getattr(imgs, "shape", type(imgs))}')
    _check_boxes(boxes)
    if boxes.shape[0] != imgs.shape[0]:
        raise ValueError(f'boxes has batch size {boxes.shape[0]}, imgs has '
                         f'{imgs.shape[0]}')
    if noise_std < 0:
        raise ValueError(f'noise_std must be >= 0, got {noise_std}')
    if other_boxes not in OTHER_BOX_MODES:
        raise ValueError(f'other_boxes must be one of {OTHER_BOX_MODES}, got '
                         f'{other_boxes!r}')
    num_imgs, channels, height, width = imgs.shape
    num_parts = boxes.shape[1]

    blurred = gaussian_blur(imgs, blur_sigma)
    if other_boxes == 'blur':
        noisy = blurred
    else:
        noise = torch.randn(imgs.shape, generator=generator, dtype=imgs.dtype,
                            device=imgs.device)
        noisy = imgs + noise_std * noise

    in_box = boxes_to_pixel_masks(boxes.to(imgs.dtype), (height, width))
    boxes_covering = in_box.sum(dim=1, keepdim=True)  # (B, 1, H, W)
    in_other_box = (boxes_covering - in_box.int()) > 0  # (B, N, H, W)

    keep = in_box[:, :, None]  # (B, N, 1, H, W)
    add_noise = in_other_box[:, :, None]
    parts = torch.where(
        keep, imgs[:, None],
        torch.where(add_noise, noisy[:, None], blurred[:, None]))
    return parts.reshape(num_imgs * num_parts, channels, height, width)


@MODELS.register_module()
class PartImageGenerator(nn.Module):
    """Builds the part images of a batch, sized relative to the image.

    Config: ``part_images=dict(type='PartImageGenerator', ...)`` in
    ``DAFClassifier``. Part image ``b * N + i`` keeps box ``i`` of image ``b``,
    noises its other boxes and blurs the rest (:func:`make_part_images`), then
    is resized by ``scale``.

    Args:
        blur_sigma_ratio (float): blur sigma as a fraction of the longer image
            side. Defaults to 1/50 (our choice, DESIGN.md: about 9 px at 448;
            at 64 px it is 1.3 px, which leaves 3-8 px parts readable, so
            small inputs want a larger ratio).
        noise_std (float): std of the noise on the other boxes, in normalised
            image units. Defaults to 1.0 (our choice).
        scale (float): resize factor of the part images before the backbone
            pass. Defaults to 1.0 (the paper's full size).
        other_boxes (str): ``'noise'`` (default, the paper) adds noise to the
            other N-1 boxes; ``'blur'`` blurs them like the context, so the N
            part images of an image differ only in the kept box and their
            cross entropies rank the boxes alone (with noise, a box whose
            neighbours cover parts scores worse because the noise erases
            them).
    """

    def __init__(self, blur_sigma_ratio: float = 1 / 50, noise_std: float = 1.0,
                 scale: float = 1.0, other_boxes: str = 'noise'):
        super().__init__()
        if blur_sigma_ratio < 0:
            raise ValueError(
                f'blur_sigma_ratio must be >= 0, got {blur_sigma_ratio}')
        if noise_std < 0:
            raise ValueError(f'noise_std must be >= 0, got {noise_std}')
        if scale <= 0:
            raise ValueError(f'scale must be > 0, got {scale}')
        if other_boxes not in OTHER_BOX_MODES:
            raise ValueError(f'other_boxes must be one of {OTHER_BOX_MODES}, got '
                             f'{other_boxes!r}')
        self.other_boxes = other_boxes
        self.blur_sigma_ratio = blur_sigma_ratio
        self.noise_std = noise_std
        self.scale = scale

    def forward(self,
                imgs: Tensor,
                boxes: Tensor,
                generator: Optional[torch.Generator] = None) -> Tensor:
        """(B, 3, H, W) images, (B, N, 4) boxes -> (B * N, 3, H', W') images,
        H' = round(H * scale)."""
        blur_sigma = self.blur_sigma_ratio * max(imgs.shape[-2:])
        parts = make_part_images(imgs, boxes.detach(), blur_sigma,
                                 self.noise_std, generator, self.other_boxes)
        return self._resample(parts)

    def single_box_images(self, imgs: Tensor, boxes: Tensor) -> Tensor:
        """One part image per box that keeps only that box sharp.

        Image ``b * K + k`` is what :meth:`forward` makes of image ``b`` with
        box ``k`` alone: box ``k`` unchanged, everything else blurred (no
        other boxes, so no noise). The blur is computed once per image rather
        than once per box, and no noise is drawn.

        Args:
            imgs (Tensor): (B, 3, H, W) images.
            boxes (Tensor): (B, K, 4) xyxy boxes, input pixels.

        Returns:
            Tensor: (B * K, 3, H', W'), image-major.
        """
        blur_sigma = self.blur_sigma_ratio * max(imgs.shape[-2:])
        parts = make_part_images(imgs, boxes.detach(), blur_sigma, other_boxes='blur')
        return self._resample(parts)

    def single_box_windows(self, imgs: Tensor, boxes: Tensor, size: int) -> Tensor:
        """The ``size`` x ``size`` window of each single-box part image.

        Equal to ``crop_around_boxes(self.single_box_images(imgs, boxes),
        boxes.reshape(-1, 4), size)``; at ``scale`` 1 only the windows are
        composed (:func:`single_box_windows`), which is what makes small
        windows cheap.

        Args:
            imgs (Tensor): (B, 3, H, W) images.
            boxes (Tensor): (B, K, 4) xyxy boxes, input pixels.
            size (int): window side in pixels, > 0.

        Returns:
            Tensor: (B * K, 3, min(size, H'), min(size, W')), image-major.
        """
        if self.scale != 1.0:
            return crop_around_boxes(self.single_box_images(imgs, boxes),
                                     boxes.reshape(-1, 4), size)
        blur_sigma = self.blur_sigma_ratio * max(imgs.shape[-2:])
        return single_box_windows(imgs, boxes, blur_sigma, size)

    def _resample(self, parts: Tensor) -> Tensor:
        """The part images resized by ``scale``."""
        if self.scale != 1.0:
            parts = F.interpolate(parts, scale_factor=self.scale, mode='bilinear',
                                  align_corners=False)
        return parts


def crop_around_boxes(imgs: Tensor, boxes: Tensor, size: int) -> Tensor:
    """A ``size`` x ``size`` window of each image, centred on its box.

    The window keeps the image's pixel scale (no resampling) and is shifted
    inside the image where the box is near a border; an image smaller than
    ``size`` along a side is kept whole along that side.

    Args:
        imgs (Tensor): (M, C, H, W) images.
        boxes (Tensor): (M, 4) one xyxy box per image, input pixels.
        size (int): window side in pixels, > 0.

    Returns:
        Tensor: (M, C, min(size, H), min(size, W)).
    """
    if boxes.dim() != 2 or boxes.shape != (imgs.shape[0], 4):
        raise ValueError(f'boxes must be (M, 4) with M = {imgs.shape[0]}, got '
                         f'{tuple(boxes.shape)}')
    rows, cols = window_rows_and_cols(boxes, imgs.shape[-2:], size)
    image_index = torch.arange(imgs.shape[0], device=imgs.device)
    return gather_windows(imgs, image_index, rows, cols)


def window_rows_and_cols(boxes: Tensor, img_shape: Tuple[int, int],
                         size: int) -> Tuple[Tensor, Tensor]:
    """The pixel rows (M, h) and columns (M, w) of each box's window.

    The window is ``size`` x ``size`` (``h = min(size, H)``, ``w = min(size,
    W)``), centred on the box and shifted inside the image (the rule of
    :func:`crop_around_boxes`).

    Args:
        boxes (Tensor): (M, 4) xyxy boxes, input pixels.
        img_shape (Tuple[int, int]): (H, W).
        size (int): window side in pixels, > 0.

    Returns:
        Tuple[Tensor, Tensor]: (M, h) and (M, w) int64 pixel indices.
    """
    if size <= 0:
        raise ValueError(f'crop size must be > 0, got {size}')
    height, width = img_shape
    crop_h, crop_w = min(size, height), min(size, width)
    boxes = boxes.detach()
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    left = (centre_x - crop_w / 2).round().long().clamp(0, width - crop_w)
    top = (centre_y - crop_h / 2).round().long().clamp(0, height - crop_h)
    rows = top[:, None] + torch.arange(crop_h, device=boxes.device)
    cols = left[:, None] + torch.arange(crop_w, device=boxes.device)
    return rows, cols


def gather_windows(imgs: Tensor, image_index: Tensor, rows: Tensor,
                   cols: Tensor) -> Tensor:
    """Window m of image ``image_index[m]``: (B, C, H, W) -> (M, C, h, w).

    Args:
        imgs (Tensor): (B, C, H, W) images.
        image_index (Tensor): (M, ) which image each window comes from.
        rows (Tensor): (M, h) pixel rows of each window.
        cols (Tensor): (M, w) pixel columns of each window.
    """
    # Indexing (B, H, W, C) gives (M, h, w, C); permute back to channels first.
    return imgs.permute(0, 2, 3, 1)[image_index[:, None, None], rows[:, :, None],
                                    cols[:, None, :]].permute(0, 3, 1, 2)


def single_box_windows(imgs: Tensor, boxes: Tensor, blur_sigma: float,
                       size: int) -> Tensor:
    """Windows of the single-box part images, composed in the windows only.

    Equal to ``crop_around_boxes(make_part_images(imgs, boxes, blur_sigma,
    other_boxes='blur'), boxes.reshape(-1, 4), size)`` (bit-exact), without
    composing the B * K full-size part images first: each image is blurred
    once, and only the windows are cut from the image and its blur and
    composed.

    Args:
        imgs (Tensor): (B, C, H, W) images.
        boxes (Tensor): (B, K, 4) xyxy boxes, input pixels; detached here.
        blur_sigma (float): Gaussian blur sigma in pixels, >= 0.
        size (int): window side in pixels, > 0.

    Returns:
        Tensor: (B * K, C, min(size, H), min(size, W)), image-major.
    """
    _check_boxes(boxes)
    if boxes.shape[0] != imgs.shape[0]:
        raise ValueError(f'boxes has batch size {boxes.shape[0]}, imgs has '
                         f'{imgs.shape[0]}')
    num_imgs, num_boxes = boxes.shape[:2]
    flat_boxes = boxes.detach().reshape(-1, 4)
    rows, cols = window_rows_and_cols(flat_boxes, imgs.shape[-2:], size)
    image_index = torch.arange(num_imgs, device=imgs.device).repeat_interleave(num_boxes)
    sharp = gather_windows(imgs, image_index, rows, cols)
    blurred = gather_windows(gaussian_blur(imgs, blur_sigma), image_index, rows, cols)
    # The box's rows and columns in the whole image, then those of the window.
    box_rows, box_cols = _box_rows_and_cols(flat_boxes[:, None].to(imgs.dtype),
                                            imgs.shape[-2:])
    in_rows = box_rows[:, 0].gather(1, rows)  # (M, h)
    in_cols = box_cols[:, 0].gather(1, cols)  # (M, w)
    in_box = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return torch.where(in_box, sharp, blurred)


def _check_boxes(boxes: Tensor) -> None:
    if not isinstance(boxes, Tensor) or boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f'boxes must be a (B, N, 4) xyxy tensor, got '
                         f'{getattr(boxes, "shape", type(boxes))}')
