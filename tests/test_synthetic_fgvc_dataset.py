"""SyntheticFGVC: mmpretrain's CUB reading the synthetic root with its own classes."""
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
