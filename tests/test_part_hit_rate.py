"""PartHitRate: hand-made boxes on a hand-written CUB-format part annotation."""
import copy
import os.path as osp

import numpy as np
import pytest
from conftest import config_path, drop_synthetic_pretrained
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import METRICS, TRANSFORMS
from part_metric_helpers import evaluate, make_sample, visible_part_regions, write_cub_root

from mmdaf.evaluation import PartHitRate
from mmdaf.evaluation.part_hit_rate import flip_points, original_to_input

IMAGES = """\
1 001.Alpha/alpha_1.jpg
2 002.Beta/beta_2.jpg
3 002.Beta/beta_3.jpg
"""
# Image 1 (100 x 100): parts 1 and 2 visible, part 3 invisible at its true place,
# part 4 invisible written as CUB writes it (0 0). Image 2 (H 50 x W 100): one
# visible part at (20, 10). Image 3: every part invisible.
PART_LOCS = """\
1 1 10.0 10.0 1
1 2 50.0 50.0 1
1 3 90.0 90.0 0
1 4 0.0 0.0 0
2 1 20.0 10.0 1
2 2 80.0 40.0 0
3 1 30.0 30.0 0
"""
# Regions of the parts of image 1 (part 3's is that of an invisible part).
PART_BOXES = """\
1 1 0.0 0.0 20.0 20.0
1 2 40.0 40.0 60.0 60.0
1 3 80.0 80.0 100.0 100.0
"""


@pytest.fixture
def data_root(tmp_path):
    return write_cub_root(tmp_path, IMAGES, PART_LOCS, PART_BOXES)


def score(metric, sample):
    """Proposal hit rate (percent) of one sample."""
    metric.process(None, [sample.to_dict()])
    return metric.compute_metrics(metric.results)['proposals']


# Image 1 at its stored size: boxes on part 1, part 2, the invisible part 3,
# and on nothing.
IMAGE1_BOXES = [[0, 0, 20, 20], [40, 40, 60, 60], [80, 80, 100, 100], [60, 0, 100, 30]]


def test_registry_build_and_hand_made_boxes(data_root):
    metric = METRICS.build(dict(type='PartHitRate', data_root=data_root))
    results = evaluate(metric, [
        make_sample(data_root, '001.Alpha/alpha_1.jpg', IMAGE1_BOXES, (100, 100)),
        # A box on the whole image: it and all its random copies hit.
        make_sample(data_root, '002.Beta/beta_2.jpg', [[0, 0, 100, 50]], (50, 100)),
    ])
    # Proposals: 2 of 4 on image 1, 1 of 1 on image 2.
    assert results['part_hit_rate/proposals'] == pytest.approx(100 * 3 / 5)
    assert results['part_hit_rate/num_boxes'] == 5
    assert results['part_hit_rate/num_samples'] == 2
    assert results['part_hit_rate/num_skipped'] == 0
    assert results['part_hit_rate/ratio'] == pytest.approx(
        results['part_hit_rate/proposals'] / results['part_hit_rate/random'])


def test_invisible_keypoints_do_not_count(data_root):
    # Only the invisible part 3 (90, 90) and CUB's (0, 0) placeholder are inside.
    boxes = [[85, 85, 95, 95], [0, 0, 5, 5]]
    assert score(PartHitRate(data_root), make_sample(
        data_root, '001.Alpha/alpha_1.jpg', boxes, (100, 100))) == 0.0
    # An image whose parts are all invisible: even the whole image misses.
    results = evaluate(PartHitRate(data_root), [make_sample(
        data_root, '002.Beta/beta_3.jpg', [[0, 0, 100, 100]], (100, 100))])
    assert results['part_hit_rate/proposals'] == 0.0
    assert results['part_hit_rate/random'] == 0.0
    assert np.isnan(results['part_hit_rate/ratio'])


def test_box_edges_count_as_inside(data_root):
    # Part 2 at (50, 50) lies on the corner of the box.
    assert score(PartHitRate(data_root), make_sample(
        data_root, '001.Alpha/alpha_1.jpg', [[50, 50, 70, 70]], (100, 100))) == 100.0


def test_resize_scale_factor_maps_keypoints_into_the_input(data_root):
    # Image 1 resized without keeping the ratio to W 200 x H 50: (x, y) -> (2x, y/2),
    # part 1 to (20, 5) and part 2 to (100, 25).
    resized = dict(img_shape=(50, 200), scale_factor=(2.0, 0.5))
    boxes = [[15, 0, 25, 10],  # on part 1 in the input
             [5, 5, 15, 15],  # on part 1 in the original image only
             [95, 20, 105, 30],  # on part 2 in the input
             [0, 15, 10, 25]]  # on part 1 had w and h been swapped: (5, 20)
    metric = PartHitRate(data_root)
    assert score(metric, make_sample(data_root, '001.Alpha/alpha_1.jpg', boxes,
                                     (100, 100), **resized)) == 50.0


def test_resize_without_scale_factor_uses_the_shapes(data_root):
    # Half size: part 1 at (5, 5), part 2 at (25, 25).
    boxes = [[0, 0, 6, 6], [8, 8, 12, 12], [24, 24, 26, 26]]
    assert score(PartHitRate(data_root), make_sample(
        data_root, '001.Alpha/alpha_1.jpg', boxes, (100, 100), (50, 50))) == pytest.approx(
            100 * 2 / 3)


def test_center_crop_after_resize(data_root):
    # 100 -> 120 px, then a centre crop to 100: offset 10, part 1 at (2, 2).
    cropped = dict(img_shape=(100, 100), scale_factor=(1.2, 1.2))
    boxes = [[0, 0, 5, 5], [8, 8, 12, 12]]
    assert score(PartHitRate(data_root), make_sample(
        data_root, '001.Alpha/alpha_1.jpg', boxes, (100, 100), **cropped)) == 50.0
    with pytest.raises(ValueError, match=r"crops after resizing .*img_shape \(100, 100\).*"
                                         r"crop='center'"):
        score(PartHitRate(data_root, crop='none'), make_sample(
            data_root, '001.Alpha/alpha_1.jpg', boxes, (100, 100), **cropped))


def test_cub_config_resize_and_center_crop_geometry():
    # configs/_base_/datasets/cub.py: Resize(scale=512) then CenterCrop(448) on
    # a 500 x 375 (W x H) CUB image: scale (512/500, 512/375), offset (32, 32).
    scale, offset = original_to_input((375, 500), (448, 448), (512 / 500, 512 / 375))
    np.testing.assert_allclose(scale, [512 / 500, 512 / 375])
    np.testing.assert_allclose(offset, [32, 32])


@pytest.mark.parametrize('flip', [False, True])
def test_mapping_agrees_with_mmcv_keypoint_transforms(flip):
    # mmcv's Resize, CenterCrop and RandomFlip move gt_keypoints themselves; the
    # metric must land on the same pixels from the metainfo alone. 64 -> W 89 x
    # H 75 makes both crop offsets x.5 (12.5, 5.5), where rounding matters.
    init_default_scope('mmpretrain')
    points = np.array([[10.0, 20.0], [40.0, 30.0], [33.3, 50.5]])
    results = dict(img=np.zeros((64, 64, 3), np.uint8), img_shape=(64, 64),
                   ori_shape=(64, 64), gt_keypoints=np.concatenate(
                       [points, np.ones((3, 1))], axis=1)[None])
    for step in (dict(type='Resize', scale=(89, 75)), dict(type='CenterCrop', crop_size=64),
                 dict(type='RandomFlip', prob=float(flip), direction='horizontal')):
        results = TRANSFORMS.build(step)(results)
    scale, offset = original_to_input((64, 64), results['img_shape'],
                                      results['scale_factor'])
    mapped = points * scale - offset
    if results.get('flip'):
        mapped = flip_points(mapped, results['img_shape'], results['flip_direction'])
    assert bool(results.get('flip')) == flip
    np.testing.assert_allclose(mapped, results['gt_keypoints'][0, :, :2], atol=1e-9)


def test_keypoints_cut_off_by_the_crop_do_not_count(data_root):
    # 100 -> 200 px, centre crop to 100: offset 50; part 1 lands at (-30, -30).
    cropped = dict(img_shape=(100, 100), scale_factor=(2.0, 2.0))
    assert score(PartHitRate(data_root), make_sample(
        data_root, '001.Alpha/alpha_1.jpg', [[-40, -40, 0, 0]], (100, 100),
        **cropped)) == 0.0


def test_horizontal_flip(data_root):
    # Part 1 mirrored to (90, 10).
    boxes = [[85, 5, 95, 15], [5, 5, 15, 15]]
    assert score(PartHitRate(data_root), make_sample(
        data_root, '001.Alpha/alpha_1.jpg', boxes, (100, 100), flip=True,
        flip_direction='horizontal')) == 50.0


def test_random_baseline_expected_value_and_seed(data_root):
    # Image 2 is W 100 x H 50 with one visible part at x = 20. A 40 x 50 box gets
    # x1 ~ U(0, 60) and covers x = 20 iff x1 <= 20: P = 1/3.
    sample = make_sample(data_root, '002.Beta/beta_2.jpg', [[60, 0, 100, 50]], (50, 100))
    results = evaluate(PartHitRate(data_root, random_draws=4000, seed=1), [sample])
    assert results['part_hit_rate/proposals'] == 0.0
    assert results['part_hit_rate/random'] == pytest.approx(100 / 3, abs=3.0)
    again = evaluate(PartHitRate(data_root, random_draws=4000, seed=1), [sample])
    assert again['part_hit_rate/random'] == results['part_hit_rate/random']
    other_seed = evaluate(PartHitRate(data_root, random_draws=4000, seed=2), [sample])
    assert other_seed['part_hit_rate/random'] != results['part_hit_rate/random']


def test_random_baseline_does_not_depend_on_batch_order(data_root):
    samples = [make_sample(data_root, '001.Alpha/alpha_1.jpg', IMAGE1_BOXES, (100, 100)),
               make_sample(data_root, '002.Beta/beta_2.jpg', [[60, 0, 100, 50]], (50, 100))]
    forward = evaluate(PartHitRate(data_root), samples)
    backward = evaluate(PartHitRate(data_root), samples[::-1])
    assert forward == backward


def test_whole_image_boxes_always_hit(data_root):
    results = evaluate(PartHitRate(data_root), [make_sample(
        data_root, '001.Alpha/alpha_1.jpg', [[0, 0, 100, 100]], (100, 100))])
    assert results['part_hit_rate/proposals'] == 100.0
    assert results['part_hit_rate/random'] == 100.0
    assert results['part_hit_rate/ratio'] == 1.0


def test_regions_mode_hits_by_box_centre(data_root):
    boxes = [[5, 5, 15, 15],  # centre (10, 10) in part 1's region
             [70, 70, 110, 110],  # centre (90, 90) in invisible part 3's region
             [30, 30, 50, 50]]  # centre (40, 40) on the corner of part 2's region
    metric = METRICS.build(dict(type='PartHitRate', data_root=data_root, mode='regions'))
    assert score(metric, make_sample(
        data_root, '001.Alpha/alpha_1.jpg', boxes, (100, 100))) == pytest.approx(
            100 * 2 / 3)


def test_samples_without_part_boxes_are_skipped_and_counted(data_root):
    samples = [make_sample(data_root, '001.Alpha/alpha_1.jpg', IMAGE1_BOXES, (100, 100)),
               make_sample(data_root, '002.Beta/beta_2.jpg', None, (50, 100))]
    results = evaluate(PartHitRate(data_root, prefix='val'), samples)
    assert results['val/num_skipped'] == 1
    assert results['val/num_samples'] == 1
    assert results['val/proposals'] == 50.0
    only_skipped = evaluate(PartHitRate(data_root), samples[1:])
    assert only_skipped == {'part_hit_rate/num_samples': 0,
                            'part_hit_rate/num_skipped': 1}


def write(root, name, text):
    with open(osp.join(root, name), 'w') as f:
        f.write(text)


@pytest.mark.parametrize('name, text, message', [
    ('parts/part_locs.txt', PART_LOCS + '3 2 1.0 1.0\n',
     r'part_locs\.txt:8: expected "<image_id> <part_id> <x> <y> <visible>", '
     r"got '3 2 1\.0 1\.0'"),
    ('parts/part_locs.txt', '1 1 ten 10.0 1\n',
     r"part_locs\.txt:1: x must be float, got 'ten'"),
    ('parts/part_locs.txt', '1 1 10.0 10.0 2\n',
     r"part_locs\.txt:1: visible must be 0 or 1, got '2'"),
    ('images.txt', IMAGES + 'four 004.D/d.jpg\n',
     r"images\.txt:4: image_id must be int, got 'four'"),
    ('images.txt', IMAGES + '4 001.Alpha/alpha_1.jpg\n',
     r"images\.txt:4: '001\.Alpha/alpha_1\.jpg' is listed twice"),
])
def test_malformed_files_name_file_line_and_value(data_root, name, text, message):
    write(data_root, name, text)
    with pytest.raises(ValueError, match=message):
        PartHitRate(data_root)


def test_missing_files(data_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r'nowhere[/\\]images\.txt not found'):
        PartHitRate(str(tmp_path / 'nowhere'))
    write(data_root, 'parts/part_boxes.txt', '1 1 0 0 20\n')
    with pytest.raises(ValueError, match=r'part_boxes\.txt:1: expected'):
        PartHitRate(data_root, mode='regions')


def test_bad_samples(data_root):
    metric = PartHitRate(data_root)
    unknown = make_sample(data_root, '009.Nu/nu_9.jpg', IMAGE1_BOXES, (100, 100))
    with pytest.raises(ValueError, match=r'nu_9\.jpg is not listed in .*images\.txt'):
        metric.process(None, [unknown.to_dict()])
    flat = make_sample(data_root, '001.Alpha/alpha_1.jpg', [0, 0, 10, 10], (100, 100))
    with pytest.raises(ValueError, match=r'part_boxes of .*alpha_1\.jpg must be \(N, 4\), '
                                         r'got shape \(4,\)'):
        metric.process(None, [flat.to_dict()])
    padded = make_sample(data_root, '001.Alpha/alpha_1.jpg', IMAGE1_BOXES, (100, 100),
                         img_shape=(128, 128), scale_factor=(1.0, 1.0))
    with pytest.raises(ValueError, match='padding in the pipeline is not supported'):
        metric.process(None, [padded.to_dict()])
    write(data_root, 'parts/part_locs.txt', '1 1 10.0 10.0 1\n')
    no_parts = make_sample(data_root, '002.Beta/beta_2.jpg', [[0, 0, 5, 5]], (50, 100))
    with pytest.raises(ValueError, match=r'part_locs\.txt has no rows for image 2'):
        PartHitRate(data_root).process(None, [no_parts.to_dict()])


@pytest.mark.parametrize('kwargs, message', [
    (dict(mode='boxes'), 'mode must be one of'),
    (dict(crop='random'), 'crop must be one of'),
    (dict(random_draws=0), 'random_draws must be a positive int'),
])
def test_bad_arguments(data_root, kwargs, message):
    with pytest.raises(ValueError, match=message):
        PartHitRate(data_root, **kwargs)


def test_synthetic_part_regions_hit_their_own_keypoints(tiny_cub_root):
    # Proposing the drawn regions of the visible parts must hit in both modes:
    # checks our reading of the files make_synthetic_fgvc writes.
    regions = visible_part_regions(tiny_cub_root)
    with open(osp.join(tiny_cub_root, 'images.txt')) as f:
        paths = dict(line.split() for line in f)
    samples = [make_sample(tiny_cub_root, paths[str(image_id)], boxes, (64, 64))
               for image_id, boxes in sorted(regions.items())[:8]]
    for mode in ('keypoints', 'regions'):
        results = evaluate(PartHitRate(tiny_cub_root, mode=mode), samples)
        assert results['part_hit_rate/proposals'] == 100.0, mode
        assert results['part_hit_rate/random'] < 100.0, mode


def test_in_a_tiny_daf_evaluation(tiny_cub_root, tmp_path):
    from mmengine.runner import Runner
    cfg = Config.fromfile(config_path('daf_r18_synthetic.py'))
    init_default_scope('mmpretrain')
    model = copy.deepcopy(cfg.model)
    drop_synthetic_pretrained(model)
    for head in (model.head, model.teacher.head, model.fusion_head):
        head.num_classes = 4
    model.data_preprocessor = dict(cfg.data_preprocessor, num_classes=4)
    loader = copy.deepcopy(cfg.test_dataloader)
    loader.dataset.data_root = tiny_cub_root
    loader.update(batch_size=4, num_workers=0, persistent_workers=False)
    runner = Runner(
        model=model, work_dir=str(tmp_path), test_dataloader=loader,
        test_cfg=dict(type='TestLoop'), default_scope='mmpretrain',
        test_evaluator=[dict(type='PartHitRate', data_root=tiny_cub_root),
                        dict(type='PartHitRate', data_root=tiny_cub_root,
                             mode='regions', prefix='part_regions')],
        env_cfg=dict(cudnn_benchmark=False), log_level='WARNING')
    results = runner.test()
    num_parts = cfg.model.sppn_head.num_parts
    assert results['part_hit_rate/num_samples'] == 8  # 4 classes x 2 test images
    assert results['part_hit_rate/num_boxes'] == 8 * num_parts
    assert results['part_regions/num_boxes'] == 8 * num_parts
    for key in ('part_hit_rate/proposals', 'part_hit_rate/random',
                'part_regions/proposals', 'part_regions/random'):
        assert 0.0 <= results[key] <= 100.0, key
    # Random boxes of the SPPN's sizes hit some parts on these images.
    assert results['part_hit_rate/random'] > 0.0
