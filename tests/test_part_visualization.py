"""draw_parts on constructed images, and PartVisualizationHook in a Runner val loop."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from conftest import config_path, drop_synthetic_pretrained
from mmengine.config import Config
from mmengine.runner import Runner

from mmdaf.apis import PART_COLORS, draw_parts
from mmdaf.apis.part_drawing import upscale_factor

GREY = 128


def grey_image(height=64, width=64):
    return np.full((height, width, 3), GREY, np.uint8)


def test_boxes_are_drawn_in_rank_colours_on_their_edges():
    image = grey_image()
    # The second box has the higher score, so it is rank 1 (first colour).
    boxes = np.array([[30, 5, 60, 20], [10, 12, 40, 50]], np.float32)
    scores = np.array([0.5, 0.9], np.float32)
    picture = draw_parts(image, boxes=boxes, scores=scores, min_side=0)

    assert picture.shape == (64, 64, 3) and picture.dtype == np.uint8
    assert np.array_equal(image, grey_image()), 'the input must not be modified'
    # rows are y, columns x; 1 px lines on a 64 px image
    for x, y in [(10, 30), (40, 30), (25, 50)]:  # left, right, bottom edge of box 2
        assert tuple(picture[y, x]) == PART_COLORS[0], (x, y)
    for x, y in [(60, 12), (45, 20)]:  # right and bottom edge of box 1
        assert tuple(picture[y, x]) == PART_COLORS[1], (x, y)
    # inside box 2, below its label, and outside every box: untouched
    assert tuple(picture[40, 25]) == (GREY, GREY, GREY)
    assert tuple(picture[60, 2]) == (GREY, GREY, GREY)


def test_heatmap_changes_the_hot_region_more_than_the_cold_one():
    image = grey_image()
    heatmap = torch.zeros(1, 8, 8)
    heatmap[0, :4, :4] = 1.0  # the top-left quarter is hot
    picture = draw_parts(image, heatmap=heatmap, alpha=0.6, min_side=0).astype(np.int32)
    change = np.abs(picture - GREY).sum(axis=2)
    hot, cold = change[4:24, 4:24], change[40:, 40:]
    assert hot.min() > 50
    assert cold.max() == 0
    # hottest pixels: 0.6 * jet(1.0) (dark red, RGB (128, 0, 0)) + 0.4 * grey
    assert np.abs(picture[10, 10] - np.array([128, 51, 51])).max() <= 1


def test_upscale_factor_is_the_smallest_integer_reaching_min_side():
    assert upscale_factor(96, 96, 384) == 4
    assert upscale_factor(64, 200, 384) == 6
    assert upscale_factor(100, 100, 384) == 4  # 400 px: at least, not exactly
    assert upscale_factor(384, 500, 384) == 1
    assert upscale_factor(1000, 800, 384) == 1  # never shrunk
    assert upscale_factor(96, 96, 0) == 1


def test_small_image_is_upscaled_nearest_before_boxes_and_labels():
    image = grey_image(96, 96)
    image[50:52, 70:72] = (0, 0, 255)  # a 2 px blue dot: becomes an 8 px block
    plain = draw_parts(image)
    assert plain.shape == (384, 384, 3) and plain.dtype == np.uint8
    np.testing.assert_array_equal(plain, np.repeat(np.repeat(image, 4, 0), 4, 1))

    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0]])  # image pixels
    picture = draw_parts(image, boxes=boxes, scores=torch.tensor([0.7]))
    assert picture.shape == (384, 384, 3) and picture.dtype == np.uint8
    # drawn at 4x: x 40..200, y 80..240, 3 px lines on a 384 px picture
    for x, y in [(40, 160), (200, 160), (120, 240), (41, 200)]:
        assert tuple(picture[y, x]) == PART_COLORS[0], (x, y)
    # where the box would be without upscaling: untouched
    for x, y in [(10, 40), (50, 40), (30, 60), (30, 20)]:
        assert tuple(picture[y, x]) == (GREY, GREY, GREY), (x, y)
    assert tuple(picture[205, 285]) == (0, 0, 255)  # the dot's block, outside the box

    # The label "1:0.70" is black text on a tag at the box's top-left corner,
    # tall enough to read at this size.
    black = np.all(picture == 0, axis=2)
    rows, cols = np.nonzero(black)
    assert rows.size > 50
    assert rows.min() >= 80 and cols.min() >= 40 and cols.max() < 200
    assert rows.max() - rows.min() + 1 >= 12
    assert tuple(picture[82, 42]) == PART_COLORS[0]  # the tag's fill


def test_heatmap_is_upscaled_with_the_image():
    image = grey_image(96, 96)
    heatmap = np.zeros((12, 12), np.float32)
    heatmap[:6, :6] = 1.0  # the top-left quarter is hot
    picture = draw_parts(image, heatmap=heatmap, alpha=0.6).astype(np.int32)
    assert picture.shape == (384, 384, 3)
    change = np.abs(picture - GREY).sum(axis=2)
    assert change[20:150, 20:150].min() > 50
    assert change[250:, 250:].max() == 0


def test_caption_goes_in_a_band_above_the_picture():
    image = grey_image(96, 96)
    picture = draw_parts(image, caption=['pred: Red_beak (0.93, right)', 'true: Red_beak'])
    band = picture.shape[0] - 384
    assert picture.shape[1] == 384 and 20 <= band <= 120
    np.testing.assert_array_equal(picture[band:], np.repeat(np.repeat(image, 4, 0), 4, 1))
    white_rows = np.nonzero(picture[:band].max(axis=(1, 2)) > 200)[0]
    assert white_rows.size > 10
    # one line wider than the picture is wrapped onto more lines than the two
    # short ones take, not cut off at the edge
    long_name = 'true: ' + '_'.join(['Yellow_beak_Fan_crest_Striped_wing_Long_tail'] * 2)
    wrapped = draw_parts(image, caption=[long_name])
    assert wrapped.shape[0] - 384 > band
    assert wrapped[:wrapped.shape[0] - 384, -2:].max() == 0  # nothing reaches the edge


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match='image_rgb must be a uint8 array'):
        draw_parts(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r'boxes must have shape \(N, 4\)'):
        draw_parts(grey_image(), boxes=np.zeros(4), scores=np.zeros(1))
    with pytest.raises(ValueError, match='scores must have shape'):
        draw_parts(grey_image(), boxes=np.zeros((2, 4)), scores=np.zeros(3))
    with pytest.raises(ValueError, match='heatmap must have shape'):
        draw_parts(grey_image(), heatmap=np.zeros((2, 4, 4)))


def tiny_daf_cfg(data_root: str, work_dir: str) -> Config:
    cfg = Config.fromfile(config_path('daf_r18_synthetic.py'))
    drop_synthetic_pretrained(cfg.model)
    cfg.work_dir = work_dir
    for head in (cfg.model.head, cfg.model.teacher.head, cfg.model.fusion_head):
        head.num_classes = 4
    cfg.data_preprocessor.num_classes = 4
    # mmpretrain's VisualizationHook asks for runner.epoch, which builds the
    # train loop and its dataset even in a val-only run.
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = data_root
        cfg[loader].batch_size = 3
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.custom_hooks = [dict(type='PartVisualizationHook', num_images=5)]
    cfg.log_level = 'WARNING'
    return cfg


def test_hook_writes_num_images_pictures_in_a_val_loop(tiny_cub_root, tmp_path):
    torch.manual_seed(0)
    work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(tiny_daf_cfg(tiny_cub_root, work_dir))
    metrics = runner.val()
    assert 'accuracy/top1' in metrics

    vis_dir = osp.join(work_dir, 'vis', 'epoch_0')
    names = sorted(os.listdir(vis_dir))
    # 8 val images in batches of 3: the 5 pictures span two batches
    assert len(names) == 5
    assert [name[:4] for name in names] == ['000_', '001_', '002_', '003_', '004_']

    dataset = runner.val_dataloader.dataset
    for index, name in enumerate(names):
        source_path = dataset.get_data_info(index)['img_path']
        assert name == f'{index:03d}_{osp.splitext(osp.basename(source_path))[0]}.png'
        source = cv2.imread(source_path)
        picture = cv2.imread(osp.join(vis_dir, name))
        # 64 px inputs are drawn 6x larger (min_side 384)
        assert source.shape == (64, 64, 3)
        assert picture.shape == (384, 384, 3)
        upscaled = np.repeat(np.repeat(source, 6, 0), 6, 1)
        # heatmap and boxes drawn over the image
        changed = np.abs(picture.astype(int) - upscaled).sum(axis=2) > 0
        assert changed.mean() > 0.05
