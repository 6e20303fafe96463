"""Bad images: odd formats load as sensible 3-channel uint8 BGR, corrupt files
fail naming the file, or are skipped and counted when asked."""
import io
import logging
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest
from conftest import config_path
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmpretrain.registry import DATASETS
from PIL import Image

from mmdaf.datasets import LoadImageFromFileSafe


def load(path: str, **kwargs) -> np.ndarray:
    results = LoadImageFromFileSafe(**kwargs)(dict(img_path=path))
    img = results['img']
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert results['img_shape'] == results['ori_shape'] == img.shape[:2]
    return img


class LogRecords(logging.Handler):
    """Collects the messages of mmengine's current logger."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_log():
    logger = MMLogger.get_current_instance()
    handler = LogRecords()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def jpeg_bytes(size=(48, 32)) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        buffer, format='JPEG', quality=90)
    return buffer.getvalue()


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = str(tmp_path / 'grey.png')
    Image.new('L', (5, 4), 77).save(path)
    img = load(path)
    assert img.shape == (4, 5, 3)
    assert (img == 77).all()


def test_rgba_is_composited_over_white_or_alpha_dropped(tmp_path):
    path = str(tmp_path / 'rgba.png')
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[0, :, 3] = (0, 255, 128)  # transparent, opaque, half
    Image.fromarray(rgba, 'RGBA').save(path)

    img = load(path).astype(int)
    np.testing.assert_array_equal(img[0, 0], (255, 255, 255))  # BGR of white
    np.testing.assert_array_equal(img[0, 1], (50, 100, 200))  # BGR of the colour
    half = np.array([50, 100, 200]) * 128 / 255 + 255 * 127 / 255
    np.testing.assert_allclose(img[0, 2], half, atol=1)

    dropped = load(path, alpha_background=None)
    assert (dropped == (50, 100, 200)).all()
    black = load(path, alpha_background=(0, 0, 0))
    np.testing.assert_array_equal(black[0, 0], (0, 0, 0))


def test_palette_with_transparency(tmp_path):
    path = str(tmp_path / 'palette.png')
    img = Image.new('P', (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.info['transparency'] = 0  # palette entry 0 (red) is transparent
    img.save(path, transparency=0)
    loaded = load(path)
    np.testing.assert_array_equal(loaded[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(loaded[0, 1], (255, 0, 0))  # BGR of blue


def test_cmyk_jpeg_has_the_right_colour(tmp_path):
    path = str(tmp_path / 'cmyk.jpg')
    Image.new('CMYK', (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # red
    with Image.open(path) as check:
        assert check.mode == 'CMYK'
    img = load(path).astype(int)
    np.testing.assert_allclose(img.reshape(-1, 3).mean(0), (0, 0, 255), atol=6)


def test_16bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    path = str(tmp_path / 'grey16.png')
    values = np.array([[0, 257 * 100, 32768, 65535]], dtype=np.uint16)
    assert cv2.imwrite(path, values)
    img = load(path)
    np.testing.assert_array_equal(img[0, :, 0], (0, 100, 128, 255))
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_16bit_colour_png_is_scaled(tmp_path):
    path = str(tmp_path / 'colour16.png')
    bgr16 = np.zeros((1, 2, 3), dtype=np.uint16)
    bgr16[0, 0] = (257 * 10, 257 * 100, 65535)
    bgr16[0, 1] = (1000, 30000, 60000)
    assert cv2.imwrite(path, bgr16)
    img = load(path).astype(int)
    np.testing.assert_array_equal(img[0, 0], (10, 100, 255))
    np.testing.assert_allclose(img[0, 1], np.array([1000, 30000, 60000]) / 257, atol=1)


def test_exif_orientation_is_applied_like_opencv(tmp_path):
    path = str(tmp_path / 'rotated.jpg')
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new('RGB', (40, 20), (0, 128, 0)).save(path, exif=exif, quality=95)
    assert load(path).shape[:2] == cv2.imread(path).shape[:2] == (40, 20)


@pytest.mark.parametrize('pipeline_key', ['train_pipeline', 'test_pipeline'])
def test_image_smaller_than_the_crop_ends_at_crop_size(tmp_path, pipeline_key):
    path = str(tmp_path / 'small.jpg')
    Image.new('RGB', (30, 20), (90, 60, 30)).save(path)
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(config_path('_base_', 'datasets', 'cub.py'))
    assert cfg[pipeline_key][0].type == 'LoadImageFromFileSafe'
    packed = Compose(cfg[pipeline_key])(dict(img_path=path, gt_label=0))
    assert tuple(packed['inputs'].shape) == (3, 448, 448)
    np.testing.assert_allclose(packed['inputs'].float().mean(dim=(1, 2)).numpy(),
                               (30, 60, 90), atol=1)


@pytest.mark.parametrize('content, reason', [
    (lambda: jpeg_bytes()[:len(jpeg_bytes()) // 2], 'image file is truncated'),
    (lambda: b'', 'cannot identify image file'),
    (lambda: b'this is not an image' * 10, 'cannot identify image file'),
])
def test_corrupt_file_fails_with_its_name(tmp_path, content, reason):
    path = str(tmp_path / 'broken.jpg')
    with open(path, 'wb') as file:
        file.write(content())
    with pytest.raises(OSError) as info:
        LoadImageFromFileSafe()(dict(img_path=path))
    assert str(info.value).startswith(f'{path}: cannot decode image (')
    assert reason in str(info.value)


def test_skip_corrupt_returns_none_and_logs_each_path_once(tmp_path, warnings_log):
    paths = [str(tmp_path / f'broken{i}.jpg') for i in range(2)]
    for path in paths:
        with open(path, 'wb') as file:
            file.write(jpeg_bytes()[:300])
    transform = LoadImageFromFileSafe(skip_corrupt=True)
    assert transform(dict(img_path=paths[0])) is None
    assert transform(dict(img_path=paths[0])) is None
    assert transform(dict(img_path=paths[1])) is None
    skipped = [m for m in warnings_log if 'LoadImageFromFileSafe' in m]
    assert len(skipped) == 2
    assert paths[0] in skipped[0] and '1 corrupt image(s) skipped so far' in skipped[0]
    assert paths[1] in skipped[1] and '2 corrupt image(s) skipped so far' in skipped[1]


def test_missing_file_raises_even_when_skipping(tmp_path):
    path = str(tmp_path / 'absent.jpg')
    with pytest.raises(FileNotFoundError, match='absent.jpg'):
        LoadImageFromFileSafe(skip_corrupt=True)(dict(img_path=path))


def test_cub_dataset_skips_a_truncated_image_only_when_asked(tiny_cub_root, tmp_path,
                                                             warnings_log):
    root = str(tmp_path / 'cub')
    shutil.copytree(tiny_cub_root, root)
    with open(osp.join(root, 'images.txt')) as file:
        first_image = osp.join(root, 'images', file.readline().split()[1])
    with open(first_image, 'rb') as file:
        data = file.read()
    with open(first_image, 'wb') as file:
        file.write(data[:len(data) // 2])

    def build(split, skip_corrupt):
        return DATASETS.build(dict(
            type='CUB', data_root=root, split=split, _scope_='mmpretrain',
            pipeline=[dict(type='LoadImageFromFileSafe', skip_corrupt=skip_corrupt),
                      dict(type='PackInputs')]))

    train = build('train', skip_corrupt=True)
    assert train.get_data_info(0)['img_path'] == first_image
    sample = train[0]  # mmengine re-draws another index for the corrupt one
    assert sample['data_samples'].img_path != first_image
    assert sample['inputs'].shape == (3, 64, 64)
    assert any(first_image in m for m in warnings_log)

    with pytest.raises(OSError, match=f'{first_image}: cannot decode image'):
        build('train', skip_corrupt=False)[0]
