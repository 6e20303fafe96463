"""draw_parts on constructed images, and PartVisualizationHook in a Runner val loop."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from conftest import config_path
from mmengine.config import Config
from mmengine.runner import Runner

from mmdaf.apis import PART_COLORS, draw_parts

GREY = 128


def grey_image(height=64, width=64):
    return np.full((height, width, 3), GREY, np.uint8)


def test_boxes_are_drawn_in_rank_colours_on_their_edges():
    image = grey_image()
    # The second box has the higher score, so it is rank 1 (first colour).
    boxes = np.array([[30, 5, 60, 20], [10, 12, 40, 50]], np.float32)
    scores = np.array([0.5, 0.9], np.float32)
    picture = draw_parts(image, boxes=boxes, scores=scores)

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
    picture = draw_parts(image, heatmap=heatmap, alpha=0.6).astype(np.int32)
    change = np.abs(picture - GREY).sum(axis=2)
    hot, cold = change[4:24, 4:24], change[40:, 40:]
    assert hot.min() > 50
    assert cold.max() == 0
    # hottest pixels: 0.6 * jet(1.0) (dark red, RGB (128, 0, 0)) + 0.4 * grey
    assert np.abs(picture[10, 10] - np.array([128, 51, 51])).max() <= 1


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
        assert picture.shape == source.shape == (64, 64, 3)
        # heatmap and boxes drawn over the image
        changed = np.abs(picture.astype(int) - source).sum(axis=2) > 0
        assert changed.mean() > 0.05
