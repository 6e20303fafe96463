"""SyntheticFGVC: mmpretrain's CUB reading the synthetic root with its own classes."""
import numpy as np
import pytest
from mmpretrain.datasets import CUB

from mmdaf.datasets import SyntheticFGVC, read_cub_class_names


def test_class_names_come_from_classes_txt(tiny_cub_root):
    names = read_cub_class_names(f'{tiny_cub_root}/classes.txt')
    with open(f'{tiny_cub_root}/classes.txt') as f:
        first_line = f.readline().split()
    assert first_line[0] == '1'
    assert names[0] == first_line[1].split('.', 1)[1]

    train = SyntheticFGVC(data_root=tiny_cub_root, split='train')
    test = SyntheticFGVC(data_root=tiny_cub_root, split='test')
    assert list(train.metainfo['classes']) == names
    assert len(names) == 4
    assert (len(train), len(test)) == (24, 8)
    # Same samples and labels as mmpretrain's own CUB class; only the names differ.
    cub = CUB(data_root=tiny_cub_root, split='train')
    assert len(cub.metainfo['classes']) == 200
    assert [s['gt_label'] for s in train.data_list] == [s['gt_label'] for s in cub.data_list]


def test_malformed_classes_txt_names_the_line(tmp_path):
    path = tmp_path / 'classes.txt'
    path.write_text('1 001.A\ntwo 002.B\n')
    with pytest.raises(ValueError, match=r'classes.txt:2: expected'):
        read_cub_class_names(str(path))


def test_missing_classes_txt_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='classes.txt: class list not found'):
        read_cub_class_names(str(tmp_path / 'classes.txt'))


def test_part_boxes_come_from_part_boxes_txt_in_part_id_order(tiny_cub_root):
    from mmdaf.datasets import read_part_box_rows
    rows = read_part_box_rows(tiny_cub_root)
    with open(f'{tiny_cub_root}/images.txt') as f:
        image_ids = {path: int(image_id) for image_id, path in map(str.split, f)}
    test = SyntheticFGVC(data_root=tiny_cub_root, split='test', with_part_boxes=True)
    assert len(test) == 8
    for index in range(len(test)):
        info = test.get_data_info(index)
        rel_path = info['img_path'].split('/images/', 1)[1]
        expected = [box for _, box in sorted(rows[image_ids[rel_path]])]
        assert info['gt_bboxes'].dtype == np.float32 and info['gt_bboxes'].shape == (5, 4)
        np.testing.assert_allclose(info['gt_bboxes'], expected, rtol=0, atol=1e-5)
    assert 'gt_bboxes' not in SyntheticFGVC(data_root=tiny_cub_root, split='test').get_data_info(0)


def test_part_boxes_flip_with_the_image_and_reach_the_data_sample(tiny_cub_root):
    pipeline = [dict(type='LoadImageFromFileSafe'),
                dict(type='RandomFlip', prob=1.0, direction='horizontal'),
                dict(type='PackInputs', algorithm_keys=('gt_bboxes', ))]
    flipped = SyntheticFGVC(data_root=tiny_cub_root, split='train', with_part_boxes=True,
                            pipeline=pipeline)
    plain = SyntheticFGVC(data_root=tiny_cub_root, split='train', with_part_boxes=True)
    boxes = plain.get_data_info(3)['gt_bboxes']
    sample = flipped[3]['data_samples']
    width = flipped[3]['inputs'].shape[-1]
    assert width == 64
    expected = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]],
                        axis=1)
    np.testing.assert_allclose(sample.gt_bboxes, expected, rtol=0, atol=1e-5)


def test_part_box_rows_with_a_missing_field_name_the_line(tmp_path):
    from mmdaf.datasets import read_part_box_rows
    (tmp_path / 'parts').mkdir()
    (tmp_path / 'parts' / 'part_boxes.txt').write_text('1 1 0 0 4 4\n1 2 0 0 4\n')
    with pytest.raises(ValueError, match=r'part_boxes.txt:2: expected "<image_id> <part_id>'):
        read_part_box_rows(str(tmp_path))


def test_part_ids_pick_the_parts_in_their_order(tiny_cub_root):
    every = SyntheticFGVC(data_root=tiny_cub_root, split='test', with_part_boxes=True)
    picked = SyntheticFGVC(data_root=tiny_cub_root, split='test', with_part_boxes=True,
                           part_ids=[5, 3])
    boxes = every.get_data_info(2)['gt_bboxes']
    np.testing.assert_array_equal(picked.get_data_info(2)['gt_bboxes'], boxes[[4, 2]])
    with pytest.raises(ValueError, match=r'has no part 9 \(part_ids=\[9\]\)'):
        SyntheticFGVC(data_root=tiny_cub_root, split='test', with_part_boxes=True,
                      part_ids=[9]).get_data_info(0)
    with pytest.raises(ValueError, match='part_ids and part_box_size need with_part_boxes=True'):
        SyntheticFGVC(data_root=tiny_cub_root, split='test', part_ids=[1])


def test_part_box_size_gives_squares_centred_on_the_regions(tiny_cub_root):
    every = SyntheticFGVC(data_root=tiny_cub_root, split='test', with_part_boxes=True)
    squares = SyntheticFGVC(data_root=tiny_cub_root, split='test', with_part_boxes=True,
                            part_box_size=12)
    regions, boxes = every.get_data_info(1)['gt_bboxes'], squares.get_data_info(1)['gt_bboxes']
    assert boxes.dtype == np.float32 and boxes.shape == (5, 4)
    np.testing.assert_allclose(boxes[:, 2:] - boxes[:, :2], 12.0, atol=1e-5)
    np.testing.assert_allclose(boxes[:, :2] + boxes[:, 2:], regions[:, :2] + regions[:, 2:],
                               atol=1e-4)
    with pytest.raises(ValueError, match='part_box_size must be > 0, got 0'):
        SyntheticFGVC(data_root=tiny_cub_root, with_part_boxes=True, part_box_size=0)
