import hashlib
import importlib.util
import os
import os.path as osp
import re

import numpy as np
import pytest
from PIL import Image

from mmdaf.datasets.synthetic_fgvc import (
    MAX_NUM_CLASSES,
    PALETTE,
    PART_ATTRIBUTES,
    PART_NAMES,
    class_part_attributes,
    image_rng,
    make_synthetic_fgvc,
    render_bird,
)

NUM_CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS, IMG_SIZE = 4, 3, 2, 64
NUM_IMAGES = NUM_CLASSES * (TRAIN_PER_CLASS + TEST_PER_CLASS)
CLI_PATH = osp.join(osp.dirname(__file__), '..', 'tools', 'misc',
                    'make_synthetic_fgvc.py')


def _make(root, seed=0, num_workers=1, **kwargs):
    return make_synthetic_fgvc(
        str(root), num_classes=NUM_CLASSES, train_per_class=TRAIN_PER_CLASS,
        test_per_class=TEST_PER_CLASS, img_size=kwargs.pop('img_size', IMG_SIZE),
        seed=seed, num_workers=num_workers, **kwargs)


def _read_table(root, name):
    with open(osp.join(root, name)) as f:
        return [line.split() for line in f.read().splitlines()]


def _file_hashes(root):
    hashes = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = osp.join(directory, name)
            with open(path, 'rb') as f:
                hashes[osp.relpath(path, root)] = hashlib.sha256(
                    f.read()).hexdigest()
    return hashes


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic') / 'cub'
    summary = _make(root)
    return str(root), summary


def test_summary_and_image_files(dataset):
    root, summary = dataset
    assert summary['num_images'] == NUM_IMAGES == 20
    assert (summary['num_train'], summary['num_test']) == (12, 8)
    assert summary['data_root'] == osp.abspath(root)
    assert summary['images_per_s'] > 0
    images = _read_table(root, 'images.txt')
    assert [int(row[0]) for row in images] == list(range(1, NUM_IMAGES + 1))
    for _, rel_path in images:
        with Image.open(osp.join(root, 'images', rel_path)) as image:
            assert image.format == 'JPEG'
            assert (image.mode, image.size) == ('RGB', (IMG_SIZE, IMG_SIZE))


def test_files_follow_cub_formats(dataset):
    root, _ = dataset
    classes = _read_table(root, 'classes.txt')
    assert [int(row[0]) for row in classes] == [1, 2, 3, 4]
    for class_id, name in classes:
        assert re.fullmatch(rf'{int(class_id):03d}\.\w+', name)
    class_dirs = {int(class_id): name for class_id, name in classes}
    labels = dict(_read_table(root, 'image_class_labels.txt'))
    for image_id, rel_path in _read_table(root, 'images.txt'):
        assert rel_path.split('/')[0] == class_dirs[int(labels[image_id])]
        assert rel_path.endswith('.jpg')
    splits = [row[1] for row in _read_table(root, 'train_test_split.txt')]
    assert splits == (['1'] * 3 + ['0'] * 2) * 4
    float_re = r'-?\d+\.\d'
    with open(osp.join(root, 'bounding_boxes.txt')) as f:
        lines = f.read().splitlines()
    assert len(lines) == NUM_IMAGES
    assert all(re.fullmatch(rf'\d+( {float_re}){{4}}', line) for line in lines)
    assert _read_table(root, 'parts/parts.txt') == [
        [str(i + 1), name] for i, name in enumerate(PART_NAMES)]
    with open(osp.join(root, 'parts/part_locs.txt')) as f:
        lines = f.read().splitlines()
    assert len(lines) == NUM_IMAGES * len(PART_NAMES)
    assert all(
        re.fullmatch(rf'\d+ [1-5]( {float_re}){{2}} [01]', line) for line in lines)
    with open(osp.join(root, 'parts/part_boxes.txt')) as f:
        lines = f.read().splitlines()
    assert len(lines) == NUM_IMAGES * len(PART_NAMES)
    assert all(re.fullmatch(rf'\d+ [1-5]( {float_re}){{4}}', line) for line in lines)


def test_mmpretrain_cub_reads_both_splits(dataset):
    from mmpretrain.datasets import CUB
    root, _ = dataset
    labels = {int(i): int(c) for i, c in _read_table(root, 'image_class_labels.txt')}
    splits = {int(i): s for i, s in _read_table(root, 'train_test_split.txt')}
    paths = {osp.join(root, 'images', p): int(i)
             for i, p in _read_table(root, 'images.txt')}
    for split, flag, count in (('train', '1', 12), ('test', '0', 8)):
        cub = CUB(data_root=root, split=split)
        assert len(cub) == count
        gt_labels = []
        for index in range(len(cub)):
            info = cub.get_data_info(index)
            image_id = paths[info['img_path']]
            assert splits[image_id] == flag
            assert info['gt_label'] == labels[image_id] - 1
            gt_labels.append(info['gt_label'])
        per_class = count // NUM_CLASSES
        assert sorted(gt_labels) == sorted(list(range(NUM_CLASSES)) * per_class)


def test_parts_lie_in_object_box_and_in_their_region(dataset):
    root, _ = dataset
    boxes = {row[0]: np.array(row[1:], dtype=float)
             for row in _read_table(root, 'bounding_boxes.txt')}
    part_boxes = {(row[0], row[1]): np.array(row[2:], dtype=float)
                  for row in _read_table(root, 'parts/part_boxes.txt')}
    for image_id, part_id, x, y, _ in _read_table(root, 'parts/part_locs.txt'):
        x, y = float(x), float(y)
        bx, by, bw, bh = boxes[image_id]
        # The values have one decimal: compare in tenths of a pixel.
        bx1, by1, bx2, by2 = np.round(np.array([bx, by, bx + bw, by + bh]) * 10)
        x, y = round(x * 10), round(y * 10)
        assert 0 <= bx1 and 0 <= by1 and bx2 <= IMG_SIZE * 10 and by2 <= IMG_SIZE * 10
        assert bx1 <= x <= bx2 and by1 <= y <= by2
        x1, y1, x2, y2 = np.round(part_boxes[(image_id, part_id)] * 10)
        assert x1 <= x <= x2 and y1 <= y <= y2
        assert bx1 <= x1 and by1 <= y1 and x2 <= bx2 and y2 <= by2


def test_parts_are_small_and_mostly_visible():
    table = class_part_attributes(8, seed=3)
    fractions, visible = [], []
    for image_id in range(150):
        _, annotation = render_bird(table[image_id % 8], 64, image_rng(3, image_id))
        boxes = annotation['part_boxes_xyxy']
        assert boxes.shape == (len(PART_NAMES), 4)
        fractions.append((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        visible.append(annotation['part_visible'])
    fractions = np.array(fractions) / 64**2
    assert fractions.max() < 0.05
    # The object is not tiny either: its parts cover a few percent of the image.
    assert fractions.sum(1).mean() > 0.02
    visible = np.array(visible)
    assert 0.9 < visible.mean() < 1.0  # some parts are occluded, most are not


@pytest.mark.parametrize('num_classes', [4, 5, 7, 12, 50, 200, MAX_NUM_CLASSES])
def test_no_single_part_decides_the_class(num_classes):
    for seed in (0, 1):
        table = class_part_attributes(num_classes, seed)
        assert len(table) == num_classes
        rows = [tuple(attrs[part] for part in PART_ATTRIBUTES) for attrs in table]
        assert len(set(rows)) == num_classes  # each class a distinct combination
        informative = 0
        for column, part in enumerate(PART_ATTRIBUTES):
            values = [row[column] for row in rows]
            assert set(values) <= set(PART_ATTRIBUTES[part])
            counts = [values.count(v) for v in set(values)]
            informative += len(counts) >= 2
            # A value of one class only would decide that class on its own.
            assert min(counts) >= 2, (part, values)
        assert informative >= 3
    assert MAX_NUM_CLASSES == 256
    assert class_part_attributes(12, 0) == class_part_attributes(12, 0)
    assert class_part_attributes(12, 0) != class_part_attributes(12, 1)


def test_class_information_is_in_the_part_pixels(tmp_path):
    # At 96 px the beak and the tail tip are a few pixels wide: their colour at
    # the keypoint must be the class's colour of that part, whatever the pose.
    _make(tmp_path, seed=5, img_size=96)
    table = [dict() for _ in range(NUM_CLASSES)]
    for class_id, part_id, value in _read_table(tmp_path,
                                                'parts/class_part_attributes.txt'):
        table[int(class_id) - 1][PART_NAMES[int(part_id) - 1]] = value
    assert table == class_part_attributes(NUM_CLASSES, 5)
    labels = {i: int(c) - 1 for i, c in _read_table(tmp_path,
                                                   'image_class_labels.txt')}
    paths = dict(_read_table(tmp_path, 'images.txt'))
    checked = 0
    for image_id, part_id, x, y, visible in _read_table(tmp_path,
                                                        'parts/part_locs.txt'):
        part = PART_NAMES[int(part_id) - 1]
        if part not in ('beak', 'tail') or visible == '0':
            continue
        with Image.open(osp.join(tmp_path, 'images', paths[image_id])) as image:
            pixel = np.asarray(image, dtype=float)[int(float(y)), int(float(x))]
        distances = [np.abs(pixel - PALETTE[v]).sum() for v in PART_ATTRIBUTES[part]]
        value = PART_ATTRIBUTES[part][int(np.argmin(distances))]
        assert value == table[labels[image_id]][part], (image_id, part, pixel)
        checked += 1
    assert checked >= 30
    # Classes differ in at least one part; images of a class share all four.
    rows = {tuple(sorted(attrs.items())) for attrs in table}
    assert len(rows) == NUM_CLASSES


def test_same_seed_same_bytes_with_any_workers(tmp_path):
    _make(tmp_path / 'a', seed=7, num_workers=1)
    _make(tmp_path / 'b', seed=7, num_workers=2)
    _make(tmp_path / 'c', seed=8, num_workers=1)
    hashes_a = _file_hashes(tmp_path / 'a')
    assert len(hashes_a) == NUM_IMAGES + 9  # 5 CUB files, 4 in parts/
    assert hashes_a == _file_hashes(tmp_path / 'b')
    hashes_c = _file_hashes(tmp_path / 'c')
    jpegs = [p for p in hashes_a if p.endswith('.jpg')]
    assert all(hashes_a[p] != hashes_c.get(p) for p in jpegs)


def test_refuses_non_empty_dir_unless_overwrite(tmp_path):
    _make(tmp_path)
    with pytest.raises(FileExistsError, match='not empty; pass overwrite=True'):
        _make(tmp_path)
    stale = tmp_path / 'images' / 'stale.jpg'
    stale.write_bytes(b'x')
    (tmp_path / 'notes.md').write_text('mine')
    summary = _make(tmp_path, overwrite=True)
    assert summary['num_images'] == NUM_IMAGES
    assert not stale.exists()
    assert (tmp_path / 'notes.md').read_text() == 'mine'


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_classes=1), r'num_classes must be in \[2, 256\], got 1'),
    (dict(num_classes=257), r'num_classes must be in \[2, 256\], got 257'),
    (dict(img_size=31), r'img_size must be in \[32, 4096\], got 31'),
    (dict(train_per_class=0), 'train_per_class must be >= 1, got 0'),
    (dict(test_per_class=-1), 'test_per_class must be >= 0, got -1'),
    (dict(seed=-1), 'seed must be >= 0, got -1'),
    (dict(num_workers=0), 'num_workers must be >= 1, got 0'),
])
def test_bad_arguments_raise(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic_fgvc(str(tmp_path / 'out'), **kwargs)
    assert not (tmp_path / 'out').exists()
    with pytest.raises(TypeError, match='img_size must be an int'):
        make_synthetic_fgvc(str(tmp_path / 'out'), img_size=64.0)


def _load_cli():
    spec = importlib.util.spec_from_file_location('make_synthetic_fgvc', CLI_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_refuses_existing_dir_and_reports_speed(tmp_path, capsys):
    cli = _load_cli()
    out = tmp_path / 'cub'
    out.mkdir()
    (out / 'something.txt').write_text('x')
    argv = ['--out', str(out), '--num-classes', '4', '--train-per-class', '2',
            '--test-per-class', '1', '--img-size', '48', '--num-workers', '1']
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert 'exists and is not empty; pass --force to overwrite it' in (
        capsys.readouterr().err)
    assert not (out / 'images.txt').exists()

    summary = cli.main(argv + ['--force'])
    assert summary['num_images'] == 12
    assert re.search(r'wrote 12 images \(8 train, 4 test, 4 classes, 48 px\) .* '
                     r'\d+ images/s', capsys.readouterr().out)

    with pytest.raises(SystemExit):
        cli.main(argv[:-2] + ['--img-size', '16', '--force'])
    assert 'img_size must be in [32, 4096], got 16' in capsys.readouterr().err


def test_part_scale_enlarges_the_informative_parts_only():
    table = class_part_attributes(4, seed=0)
    _, plain = render_bird(table[1], 64, image_rng(0, 7))
    _, large = render_bird(table[1], 64, image_rng(0, 7), part_scale=1.6)
    side = lambda boxes: np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    ratio = side(large['part_boxes_xyxy']) / side(plain['part_boxes_xyxy'])
    informative = [PART_NAMES.index(p) for p in PART_ATTRIBUTES]
    eye = PART_NAMES.index('eye')
    # Same pose (same random stream), parts 1.6x larger, the eye unchanged.
    np.testing.assert_allclose(ratio[informative], 1.6, rtol=0.12)
    assert ratio[eye] == pytest.approx(1.0, abs=0.05)


def test_part_scale_out_of_range_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r'part_scale must be a number in \[0.5, 3\], got 4'):
        _make(tmp_path / 'x', part_scale=4)


def test_generic_set_labels_are_hue_and_facing_not_part_attributes(tmp_path):
    from mmdaf.datasets.synthetic_fgvc import GENERIC_HUES, make_synthetic_generic
    root = str(tmp_path / 'generic')
    info = make_synthetic_generic(root, train_per_class=4, test_per_class=1,
                                  img_size=64, seed=5, num_workers=1)
    assert info['num_classes'] == 12 and info['num_images'] == 60
    names = [row[1] for row in _read_table(root, 'classes.txt')]
    assert names[:3] == ['001.Red_body_facing_right', '002.Red_body_facing_left',
                         '003.Yellow_body_facing_right']
    assert len(GENERIC_HUES) * 2 == len(names)
    # Facing: the beak keypoint lies right of the tail keypoint iff facing right.
    locs = np.array([[float(v) for v in row] for row in
                     _read_table(root, 'parts/part_locs.txt')])
    labels = {int(i): int(k) for i, k in _read_table(root, 'image_class_labels.txt')}
    beak, tail = PART_NAMES.index('beak') + 1, PART_NAMES.index('tail') + 1
    for image_id, label in labels.items():
        beak_x = locs[(locs[:, 0] == image_id) & (locs[:, 1] == beak)][0, 2]
        tail_x = locs[(locs[:, 0] == image_id) & (locs[:, 1] == tail)][0, 2]
        assert (beak_x > tail_x) == (label % 2 == 1), image_id
    # No class-attribute table: the part attributes are not a function of the label.
    assert not osp.exists(osp.join(root, 'parts', 'class_part_attributes.txt'))


class _RecordingDraw:
    """Stands in for ImageDraw: keeps the colour of every polygon drawn."""

    def __init__(self):
        self.colours = []

    def polygon(self, points, fill):
        self.colours.append(tuple(fill))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_plain_clutter_has_no_part_colours_and_draws_the_same_random_numbers(seed):
    from mmdaf.datasets.synthetic_fgvc import _draw_clutter
    part_like, plain = _RecordingDraw(), _RecordingDraw()
    rng_part_like, rng_plain = image_rng(seed, 3), image_rng(seed, 3)
    _draw_clutter(part_like, rng_part_like, 64)
    _draw_clutter(plain, rng_plain, 64, part_like=False)
    palette = {tuple(colour) for colour in PALETTE.values()}
    # Half the part-like clutter takes part colours; none of the plain one,
    # which also draws no stripes (one polygon per shape, 16-28 shapes).
    assert any(colour in palette for colour in part_like.colours)
    assert not any(colour in palette for colour in plain.colours)
    assert 16 <= len(plain.colours) <= 28
    assert len(plain.colours) <= len(part_like.colours)
    # The same stream is left behind, so the bird drawn next is the same.
    assert rng_part_like.random() == rng_plain.random()


def test_plain_clutter_keeps_each_bird_and_changes_the_background(tmp_path):
    _make(tmp_path / 'parts')
    _make(tmp_path / 'plain', part_like_clutter=False)
    for name in ('images.txt', 'image_class_labels.txt', 'bounding_boxes.txt',
                 osp.join('parts', 'part_boxes.txt'), osp.join('parts', 'part_locs.txt')):
        assert _read_table(tmp_path / 'parts', name) == _read_table(tmp_path / 'plain', name)
    first = _read_table(tmp_path / 'parts', 'images.txt')[0][1]
    with Image.open(tmp_path / 'parts' / 'images' / first) as a, \
            Image.open(tmp_path / 'plain' / 'images' / first) as b:
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() > 50


def test_part_like_clutter_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match="part_like_clutter must be a bool, got 'no'"):
        _make(tmp_path / 'x', part_like_clutter='no')


def test_cli_plain_clutter_is_for_the_fine_grained_set(tmp_path, capsys):
    cli = _load_cli()
    argv = ['--out', str(tmp_path / 'cub'), '--train-per-class', '2',
            '--test-per-class', '1', '--img-size', '48', '--num-workers', '1']
    with pytest.raises(SystemExit):
        cli.main(argv + ['--generic', '--plain-clutter'])
    assert '--plain-clutter applies to the fine-grained set' in capsys.readouterr().err
    summary = cli.main(argv + ['--num-classes', '4', '--plain-clutter'])
    assert summary['num_images'] == 12
