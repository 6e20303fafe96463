"""Image loading that turns every decodable image into 3-channel uint8 BGR and
names the file when it cannot."""
import io
import logging
from typing import Optional, Sequence, Set

import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from mmpretrain.registry import TRANSFORMS
from PIL import Image, ImageOps

# PIL modes that hold more than 8 bits per sample (16-bit PNG/TIFF greyscale
# opens as one of these).
HIGH_DEPTH_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')


def _scale_to_uint8(samples: np.ndarray, max_value: int) -> np.ndarray:
    """Map [0, max_value] linearly onto [0, 255] with rounding (no clipping
    of the upper range, which ``Image.convert`` would do)."""
    samples = np.clip(samples.astype(np.int64), 0, max_value)
    return ((samples * 255 + max_value // 2) // max_value).astype(np.uint8)


def _high_depth_to_rgb(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a 16-bit (or 32-bit integer) greyscale image."""
    samples = np.asarray(img)
    # 16-bit files hold [0, 65535]; mode 'I' may also come from 32-bit TIFFs,
    # whose values above 16 bits are clipped to white.
    grey = _scale_to_uint8(samples, 65535)
    return np.repeat(grey[..., None], 3, axis=2)


def _composite(img: Image.Image, background: Sequence[int]) -> Image.Image:
    """RGBA -> RGB over a constant background colour."""
    canvas = Image.new('RGB', img.size, tuple(int(v) for v in background))
    canvas.paste(img, mask=img.getchannel('A'))
    return canvas


def decode_image_rgb(img_bytes: bytes,
                     alpha_background: Optional[Sequence[int]] = (255, 255, 255)
                     ) -> np.ndarray:
    """Decode image bytes to (H, W, 3) uint8 RGB, whatever the source format.

    - greyscale (``L``, ``1``), palette (``P``), ``CMYK`` (including Adobe's
      inverted CMYK JPEGs, which PIL reads) and ``YCbCr``: converted to RGB;
    - 16-bit greyscale: scaled to 8 bits (``v * 255 / 65535``), not clipped;
    - with alpha (``RGBA``, ``LA``, ``PA``, palette with transparency):
      composited over ``alpha_background``, or alpha dropped when it is None;
    - the EXIF orientation is applied, as OpenCV's ``imread`` does.

    Truncated files fail here: PIL refuses to decode them (unlike OpenCV, which
    warns and returns a partly grey image).

    Args:
        img_bytes (bytes): the encoded file.
        alpha_background (Sequence[int], optional): RGB colour transparent
            pixels are composited over. Our default: white (255, 255, 255),
            how the image looks on a page. None drops the alpha channel and
            keeps the colour stored under transparent pixels.

    Returns:
        np.ndarray: (H, W, 3) uint8 RGB, C-contiguous.

    Raises:
        Exception: whatever PIL raises for a file it cannot decode
            (``UnidentifiedImageError`` for an empty or unknown file,
            ``OSError`` for a truncated one, ...).
    """
    with Image.open(io.BytesIO(img_bytes)) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in HIGH_DEPTH_MODES:
            return _high_depth_to_rgb(img)
        if img.mode == 'P' and 'transparency' in img.info:
            img = img.convert('RGBA')
        elif img.mode in ('LA', 'PA', 'La', 'RGBa'):
            img = img.convert('RGBA')
        if img.mode == 'RGBA':
            img = (_composite(img, alpha_background)
                   if alpha_background is not None else img.convert('RGB'))
        elif img.mode != 'RGB':
            img = img.convert('RGB')
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


@TRANSFORMS.register_module()
class LoadImageFromFileSafe(BaseTransform):
    """Load an image as 3-channel uint8 BGR, or fail naming the file.

    A drop-in replacement for ``LoadImageFromFile`` (same outputs: ``img``
    (H, W, 3) uint8 BGR as OpenCV gives, ``img_shape`` and ``ori_shape``
    (H, W)) that decodes every image the same way (see
    :func:`decode_image_rgb`: greyscale, palette, CMYK, 16-bit and RGBA images
    all come out as sensible 8-bit BGR).

    A file that cannot be decoded (empty, truncated, not an image) raises
    ``OSError('<path>: cannot decode image (<reason>)')``. With
    ``skip_corrupt=True`` the transform returns None instead, and mmengine's
    ``BaseDataset`` draws another index (training datasets only; a test-mode
    dataset raises on None, so keep ``skip_corrupt=False`` in test pipelines:
    an evaluation should not silently drop images). Each skipped path is
    logged once, as a warning with the running count; the count is per
    process, i.e. per dataloader worker.

    A missing file always raises ``FileNotFoundError``: that is a dataset
    layout problem, which :func:`mmdaf.datasets.check_dataset_cfg` reports
    before training.

    Args:
        skip_corrupt (bool): return None for undecodable images instead of
            raising. Defaults to False.
        to_float32 (bool): return a float32 image instead of uint8. Defaults
            to False.
        alpha_background (Sequence[int], optional): RGB colour that
            transparent pixels are composited over; None drops alpha. Defaults
            to white.
        backend_args (dict, optional): mmengine file backend arguments.
    """

    def __init__(self,
                 skip_corrupt: bool = False,
                 to_float32: bool = False,
                 alpha_background: Optional[Sequence[int]] = (255, 255, 255),
                 backend_args: Optional[dict] = None) -> None:
        if alpha_background is not None and (
                len(alpha_background) != 3
                or not all(0 <= int(v) <= 255 for v in alpha_background)):
            raise ValueError('alpha_background must be None or 3 ints in [0, 255], '
                             f'got {alpha_background!r}')
        self.skip_corrupt = skip_corrupt
        self.to_float32 = to_float32
        self.alpha_background = alpha_background
        self.backend_args = backend_args
        self.skipped_paths: Set[str] = set()

    def transform(self, results: dict) -> Optional[dict]:
        path = results['img_path']
        img_bytes = fileio.get(path, backend_args=self.backend_args)
        try:
            img_rgb = decode_image_rgb(img_bytes, self.alpha_background)
        except Exception as error:
            reason = f'{type(error).__name__}: {error}'
            if not self.skip_corrupt:
                raise OSError(f'{path}: cannot decode image ({reason})') from error
            self._log_skip(path, reason)
            return None
        img = np.ascontiguousarray(img_rgb[..., ::-1])  # RGB -> BGR
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def _log_skip(self, path: str, reason: str) -> None:
        if path in self.skipped_paths:
            return
        self.skipped_paths.add(path)
        print_log(f'LoadImageFromFileSafe: skipped corrupt image {path} ({reason}); '
                  f'{len(self.skipped_paths)} corrupt image(s) skipped so far '
                  'in this process', logger='current', level=logging.WARNING)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(skip_corrupt={self.skip_corrupt}, '
                f'to_float32={self.to_float32}, '
                f'alpha_background={self.alpha_background}, '
                f'backend_args={self.backend_args})')
