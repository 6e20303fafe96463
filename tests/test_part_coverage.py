"""PartCoverage: hand-made boxes on a hand-written CUB-format part annotation."""
import copy
import os.path as osp

import numpy as np
import pytest
from conftest import config_path, drop_synthetic_pretrained
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import METRICS
from part_metric_helpers import evaluate, make_sample, visible_part_regions, write_cub_root

from mmdaf.evaluation import PartCoverage
from mmdaf.evaluation.part_coverage import parts_covered

IMAGES = """\
1 001.Alpha/alpha_1.jpg
2 002.Beta/beta_2.jpg
3 002.Beta/beta_3.jpg
"""
# Image 1 (100 x 100): parts 1, 2 and 5 visible, part 3 invisible at its true
# place, part 4 invisible written as CUB writes it (0 0). Image 2 (H 50 x W 100):
# one visible part at (20, 10). Image 3: every part invisible.
PART_LOCS = """\
1 1 10.0 10.0 1
1 2 50.0 50.0 1
1 3 90.0 90.0 0
1 4 0.0 0.0 0
1 5 30.0 10.0 1
2 1 20.0 10.0 1
2 2 80.0 40.0 0
3 1 30.0 30.0 0
"""
# Regions centred on the keypoints (part 3's is that of an invisible part).
PART_BOXES = """\
1 1 0.0 0.0 20.0 20.0
1 2 40.0 40.0 60.0 60.0
1 3 80.0 80.0 100.0 100.0
1 5 24.0 4.0 36.0 16.0
2 1 10.0 0.0 30.0 20.0
"""
ALPHA, BETA, ALL_HIDDEN = ('001.Alpha/alpha_1.jpg', '002.Beta/beta_2.jpg',
                           '002.Beta/beta_3.jpg')
ON_1, ON_1_AGAIN, ON_2, ON_5 = [0, 0, 20, 20], [5, 5, 15, 15], [40, 40, 60, 60], [24, 4, 36, 16]
ON_NOTHING, ON_HIDDEN_3 = [60, 0, 100, 30], [85, 85, 95, 95]


@pytest.fixture
def data_root(tmp_path):
    return write_cub_root(tmp_path, IMAGES, PART_LOCS, PART_BOXES)


def score(metric, sample):
    """All results of one sample, without the prefix."""
    metric.process(None, [sample.to_dict()])
    return metric.compute_metrics(metric.results)


def covered(metric, sample):
    """Different parts covered by the top boxes of one sample."""
    return score(metric, sample)['parts_covered']


def test_registry_build_and_hand_made_boxes(data_root):
    metric = METRICS.build(dict(type='PartCoverage', data_root=data_root))
    results = evaluate(metric, [
        # Parts 1 (twice) and 2; the fourth box is on nothing.
        make_sample(data_root, ALPHA, [ON_1, ON_1_AGAIN, ON_2, ON_NOTHING], (100, 100)),
        # A box on the whole image covers its one visible part.
        make_sample(data_root, BETA, [[0, 0, 100, 50]], (50, 100)),
    ])
    assert results['part_coverage/parts_covered'] == 1.5  # (2 + 1) / 2
    assert results['part_coverage/num_parts'] == 2.0  # (3 + 1) / 2
    assert results['part_coverage/boxes_per_image'] == 2.5  # (4 + 1) / 2
    assert results['part_coverage/num_samples'] == 2
    assert results['part_coverage/num_skipped'] == 0
    assert 0.0 <= results['part_coverage/parts_covered_random'] <= 2.0


def test_two_boxes_on_one_part_count_once(data_root):
    assert covered(PartCoverage(data_root), make_sample(
        data_root, ALPHA, [ON_1, ON_1_AGAIN], (100, 100))) == 1
    assert covered(PartCoverage(data_root), make_sample(
        data_root, ALPHA, [ON_1, ON_1_AGAIN, ON_2, ON_5], (100, 100))) == 3


def test_one_box_on_two_parts_counts_two(data_root):
    # Parts 1 (10, 10) and 5 (30, 10).
    assert covered(PartCoverage(data_root), make_sample(
        data_root, ALPHA, [[0, 0, 40, 20]], (100, 100))) == 2
    # Part 5 on one corner, part 2 on the other: edges count as inside.
    assert covered(PartCoverage(data_root), make_sample(
        data_root, ALPHA, [[30, 10, 50, 50]], (100, 100))) == 2


def test_invisible_keypoints_do_not_count(data_root):
    # Only the invisible part 3 (90, 90) and CUB's (0, 0) placeholder are inside.
    results = score(PartCoverage(data_root), make_sample(
        data_root, ALPHA, [ON_HIDDEN_3, [0, 0, 5, 5]], (100, 100)))
    assert results['parts_covered'] == 0
    assert results['num_parts'] == 3
    # An image whose parts are all invisible: even the whole image covers none.
    results = score(PartCoverage(data_root), make_sample(
        data_root, ALL_HIDDEN, [[0, 0, 100, 100]], (100, 100)))
    assert results == dict(num_samples=1, num_skipped=0, parts_covered=0.0,
                           parts_covered_random=0.0, num_parts=0.0, boxes_per_image=1.0)


@pytest.mark.parametrize('top_n, expected', [(1, 0), (2, 0), (3, 1), (4, 2), (5, 3),
                                             (10, 3)])
def test_only_the_top_n_boxes_count(data_root, top_n, expected):
    # Best first: on nothing, on invisible part 3, then parts 1, 2 and 5.
    boxes = [ON_NOTHING, ON_HIDDEN_3, ON_1, ON_2, ON_5]
    results = score(PartCoverage(data_root, top_n=top_n),
                     make_sample(data_root, ALPHA, boxes, (100, 100)))
    assert results['parts_covered'] == expected
    assert results['boxes_per_image'] == min(top_n, len(boxes))


def test_default_top_n_is_four(data_root):
    boxes = [ON_NOTHING, ON_HIDDEN_3, ON_1, ON_2, ON_5]
    assert covered(PartCoverage(data_root), make_sample(
        data_root, ALPHA, boxes, (100, 100))) == 2


def test_no_boxes_cover_nothing(data_root):
    results = score(PartCoverage(data_root), make_sample(
        data_root, ALPHA, np.zeros((0, 4)), (100, 100)))
    assert results['parts_covered'] == 0
    assert results['parts_covered_random'] == 0
    assert results['boxes_per_image'] == 0


def test_parts_covered_on_sets_of_boxes():
    points = np.array([[10.0, 10.0], [50.0, 50.0], [30.0, 10.0]])
    boxes = np.array([[ON_1, ON_1_AGAIN],  # part 1 twice
                      [ON_1, ON_2],  # parts 1 and 2
                      [[0, 0, 40, 20], ON_2],  # parts 1, 5 and 2
                      [ON_NOTHING, ON_HIDDEN_3]], dtype=np.float64)
    np.testing.assert_array_equal(parts_covered(boxes, points), [1, 2, 3, 0])
    assert parts_covered(boxes[0], np.zeros((0, 2))) == 0
    assert parts_covered(np.zeros((0, 4)), points) == 0


@pytest.mark.parametrize('boxes', [
    [[0, 0, 100, 100]],
    [[0, 0, 100, 100], [0, 0, 100, 100]],
    [[-10, -10, 120, 120], ON_NOTHING],  # larger than the image: clipped to it
])
def test_random_boxes_covering_the_whole_image_find_every_part(data_root, boxes):
    results = score(PartCoverage(data_root, seed=3), make_sample(
        data_root, ALPHA, boxes, (100, 100)))
    assert results['parts_covered'] == 3
    assert results['parts_covered_random'] == 3
    assert results['num_parts'] == 3


def test_random_baseline_expected_value_and_seed(data_root):
    # Image 2 is W 100 x H 50 with one visible part at x = 20. A 40 x 50 box gets
    # x1 ~ U(0, 60) and covers x = 20 iff x1 <= 20: P = 1/3.
    one_box = make_sample(data_root, BETA, [[60, 0, 100, 50]], (50, 100))
    results = evaluate(PartCoverage(data_root, random_draws=4000, seed=1), [one_box])
    assert results['part_coverage/parts_covered'] == 0
    assert results['part_coverage/parts_covered_random'] == pytest.approx(1 / 3, abs=0.03)
    again = evaluate(PartCoverage(data_root, random_draws=4000, seed=1), [one_box])
    assert again == results
    other_seed = evaluate(PartCoverage(data_root, random_draws=4000, seed=2), [one_box])
    assert (other_seed['part_coverage/parts_covered_random']
            != results['part_coverage/parts_covered_random'])
    # Two such boxes, drawn independently, cover it with P = 1 - (2/3)^2 = 5/9.
    two_boxes = make_sample(data_root, BETA, [[60, 0, 100, 50]] * 2, (50, 100))
    results = evaluate(PartCoverage(data_root, random_draws=4000, seed=1), [two_boxes])
    assert results['part_coverage/parts_covered_random'] == pytest.approx(5 / 9, abs=0.03)


def test_random_baseline_does_not_depend_on_batch_order(data_root):
    samples = [make_sample(data_root, ALPHA, [ON_1, ON_2, ON_NOTHING], (100, 100)),
               make_sample(data_root, BETA, [[60, 0, 100, 50]], (50, 100))]
    forward = evaluate(PartCoverage(data_root), samples)
    backward = evaluate(PartCoverage(data_root), samples[::-1])
    assert forward == backward


def test_regions_mode_counts_region_centres_inside_boxes(data_root):
    metric = METRICS.build(dict(type='PartCoverage', data_root=data_root, mode='regions'))
    # Centres (10, 10) and (30, 10) of parts 1 and 5; (90, 90) is invisible part 3's.
    results = score(metric, make_sample(
        data_root, ALPHA, [[0, 0, 40, 20], [70, 70, 110, 110]], (100, 100)))
    assert results['parts_covered'] == 2
    assert results['num_parts'] == 3
    # The box's centre (17, 17) lies in part 1's region, but the region's centre
    # is not in the box: no part covered (PartHitRate's regions mode would hit).
    assert covered(PartCoverage(data_root, mode='regions'), make_sample(
        data_root, ALPHA, [[15, 15, 19, 19]], (100, 100))) == 0


def test_horizontal_flip(data_root):
    # Mirrored: part 1 to (90, 10), part 5 to (70, 10), part 2 stays at (50, 50).
    flipped = dict(flip=True, flip_direction='horizontal')
    assert covered(PartCoverage(data_root), make_sample(
        data_root, ALPHA, [[65, 5, 95, 15], ON_1], (100, 100), **flipped)) == 2


def test_parts_cut_off_by_the_crop_do_not_count(data_root):
    # 100 -> 200 px, centre crop to 100: offset 50. Parts 1 and 5 land at
    # (-30, -30) and (10, -30), outside; part 2 at (50, 50).
    cropped = dict(img_shape=(100, 100), scale_factor=(2.0, 2.0))
    results = score(PartCoverage(data_root), make_sample(
        data_root, ALPHA, [[-40, -40, 100, 100]], (100, 100), **cropped))
    assert results['num_parts'] == 1
    assert results['parts_covered'] == 1
    assert results['parts_covered_random'] == 1


def test_samples_without_part_boxes_are_skipped_and_counted(data_root):
    samples = [make_sample(data_root, ALPHA, [ON_1, ON_2], (100, 100)),
               make_sample(data_root, BETA, None, (50, 100))]
    results = evaluate(PartCoverage(data_root, prefix='val'), samples)
    assert results['val/num_skipped'] == 1
    assert results['val/num_samples'] == 1
    assert results['val/parts_covered'] == 2
    only_skipped = evaluate(PartCoverage(data_root), samples[1:])
    assert only_skipped == {'part_coverage/num_samples': 0,
                            'part_coverage/num_skipped': 1}


def write(root, name, text):
    with open(osp.join(root, name), 'w') as f:
        f.write(text)


@pytest.mark.parametrize('name, text, mode, message', [
    ('parts/part_locs.txt', PART_LOCS + '3 2 1.0 1.0\n', 'keypoints',
     r'^PartCoverage: .*part_locs\.txt:9: expected "<image_id> <part_id> <x> <y> '
     r'<visible>", got \'3 2 1\.0 1\.0\'$'),
    ('parts/part_locs.txt', '1 1 ten 10.0 1\n', 'keypoints',
     r"^PartCoverage: .*part_locs\.txt:1: x must be float, got 'ten'$"),
    ('parts/part_locs.txt', '1 1 10.0 nan 1\n', 'keypoints',
     r"^PartCoverage: .*part_locs\.txt:1: y must be finite, got 'nan'$"),
    ('parts/part_locs.txt', '\n1 1 10.0 10.0 2\n', 'keypoints',
     r"^PartCoverage: .*part_locs\.txt:2: visible must be 0 or 1, got '2'$"),
    ('images.txt', IMAGES + 'four 004.D/d.jpg\n', 'keypoints',
     r"^PartCoverage: .*images\.txt:4: image_id must be int, got 'four'$"),
    ('images.txt', IMAGES + '4 001.Alpha/alpha_1.jpg\n', 'keypoints',
     r"^PartCoverage: .*images\.txt:4: '001\.Alpha/alpha_1\.jpg' is listed twice"),
    ('parts/part_boxes.txt', PART_BOXES + '2 2 30 0 10 20\n', 'regions',
     r"^PartCoverage: .*part_boxes\.txt:6: need x1 <= x2 and y1 <= y2, "
     r"got '30 0 10 20'$"),
])
def test_malformed_files_name_file_line_and_value(data_root, name, text, mode, message):
    write(data_root, name, text)
    with pytest.raises(ValueError, match=message):
        PartCoverage(data_root, mode=mode)


def test_missing_files(data_root, tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r'^PartCoverage: .*nowhere[/\\]images\.txt not found$'):
        PartCoverage(str(tmp_path / 'nowhere'))
    write(data_root, 'parts/part_boxes.txt', '1 1 0 0 20\n')
    with pytest.raises(ValueError, match=r'part_boxes\.txt:1: expected'):
        PartCoverage(data_root, mode='regions')


def test_bad_samples(data_root):
    metric = PartCoverage(data_root)
    unknown = make_sample(data_root, '009.Nu/nu_9.jpg', [ON_1], (100, 100))
    with pytest.raises(ValueError, match=r'^PartCoverage: .*nu_9\.jpg is not listed in '
                                         r'.*images\.txt'):
        metric.process(None, [unknown.to_dict()])
    flat = make_sample(data_root, ALPHA, [0, 0, 10, 10], (100, 100))
    with pytest.raises(ValueError, match=r'part_boxes of .*alpha_1\.jpg must be \(N, 4\), '
                                         r'got shape \(4,\)'):
        metric.process(None, [flat.to_dict()])
    padded = make_sample(data_root, ALPHA, [ON_1], (100, 100), img_shape=(128, 128),
                         scale_factor=(1.0, 1.0))
    with pytest.raises(ValueError, match='padding in the pipeline is not supported'):
        metric.process(None, [padded.to_dict()])
    no_shape = make_sample(data_root, ALPHA, [ON_1], (100, 100)).to_dict()
    del no_shape['ori_shape']
    with pytest.raises(KeyError, match="no 'ori_shape' in its metainfo"):
        metric.process(None, [no_shape])
    # Image 3 has keypoint rows but no region rows.
    hidden = make_sample(data_root, ALL_HIDDEN, [ON_1], (100, 100))
    with pytest.raises(ValueError, match=r'part_boxes\.txt has no rows for image 3'):
        PartCoverage(data_root, mode='regions').process(None, [hidden.to_dict()])
    write(data_root, 'parts/part_locs.txt', '1 1 10.0 10.0 1\n')
    with pytest.raises(ValueError, match=r'part_locs\.txt has no rows for image 2'):
        PartCoverage(data_root).process(None, [make_sample(
            data_root, BETA, [[0, 0, 5, 5]], (50, 100)).to_dict()])


@pytest.mark.parametrize('kwargs, message', [
    (dict(mode='boxes'), 'mode must be one of'),
    (dict(crop='random'), 'crop must be one of'),
    (dict(top_n=0), 'top_n must be a positive int, got 0'),
    (dict(top_n=2.5), 'top_n must be a positive int, got 2.5'),
    (dict(top_n=True), 'top_n must be a positive int, got True'),
    (dict(random_draws=0), 'random_draws must be a positive int'),
])
def test_bad_arguments(data_root, kwargs, message):
    with pytest.raises(ValueError, match=f'^PartCoverage: {message}'):
        PartCoverage(data_root, **kwargs)


def test_synthetic_part_regions_cover_every_visible_part(tiny_cub_root):
    # Proposing the drawn regions of the visible parts must cover all of them in
    # both modes: checks our reading of the files make_synthetic_fgvc writes.
    regions = visible_part_regions(tiny_cub_root)
    with open(osp.join(tiny_cub_root, 'images.txt')) as f:
        paths = dict(line.split() for line in f)
    samples = [make_sample(tiny_cub_root, paths[str(image_id)], boxes, (64, 64))
               for image_id, boxes in sorted(regions.items())[:8]]
    for mode in ('keypoints', 'regions'):
        results = evaluate(PartCoverage(tiny_cub_root, top_n=100, mode=mode), samples)
        assert results['part_coverage/num_parts'] > 1.0, mode
        assert (results['part_coverage/parts_covered']
                == results['part_coverage/num_parts']), mode
        assert (results['part_coverage/parts_covered_random']
                < results['part_coverage/num_parts']), mode


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
        test_evaluator=[dict(type='PartCoverage', data_root=tiny_cub_root),
                        dict(type='PartCoverage', data_root=tiny_cub_root, top_n=1,
                             mode='regions', prefix='part_regions')],
        env_cfg=dict(cudnn_benchmark=False), log_level='WARNING')
    results = runner.test()
    num_boxes = cfg.model.sppn_head.num_parts
    assert results['part_coverage/num_samples'] == 8  # 4 classes x 2 test images
    assert results['part_coverage/boxes_per_image'] == min(4, num_boxes)
    assert results['part_regions/boxes_per_image'] == 1
    for prefix in ('part_coverage', 'part_regions'):
        ceiling = results[f'{prefix}/num_parts']
        assert ceiling > 0, prefix
        for key in ('parts_covered', 'parts_covered_random'):
            assert 0.0 <= results[f'{prefix}/{key}'] <= ceiling, (prefix, key)
