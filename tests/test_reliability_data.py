"""Wrong dataset roots fail before training, naming the path and the layout."""
import os
import os.path as osp
import shutil

import pytest
from PIL import Image
from test_train_resume import tiny_baseline_cfg

from mmdaf.datasets import check_config_datasets, check_dataset_cfg
from mmdaf.datasets.checks import find_missing_files


@pytest.fixture
def cub_copy(tiny_cub_root, tmp_path) -> str:
    root = str(tmp_path / 'CUB_200_2011')
    shutil.copytree(tiny_cub_root, root)
    return root


def write_jpg(path: str, size=(16, 16)) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.new('RGB', size, (10, 20, 30)).save(path)


def test_complete_cub_root_passes(cub_copy):
    for split in ('train', 'test'):
        dataset_cfg = dict(type='CUB', data_root=cub_copy, split=split)
        assert check_dataset_cfg(dataset_cfg) is None


def test_cub_missing_annotation_names_file_and_layout(cub_copy):
    os.remove(osp.join(cub_copy, 'image_class_labels.txt'))
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_cfg(dict(type='CUB', data_root=cub_copy, split='train'))
    message = str(info.value)
    assert f"CUB(data_root='{cub_copy}', split='train')" in message
    labels_file = osp.join(cub_copy, 'image_class_labels.txt')
    assert f'annotation file not found: {labels_file}' in message
    assert 'CUB reads this layout:' in message
    assert 'train_test_split.txt    <image_id> <1 = train | 0 = test>' in message


def test_cub_root_one_level_too_high_says_where_to_point(cub_copy):
    parent = osp.dirname(cub_copy)
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_cfg(dict(type='mmpretrain.CUB', data_root=parent))
    message = str(info.value)
    assert f"annotation file not found: {osp.join(parent, 'images.txt')}" in message
    assert f"data_root is one level too high: set data_root='{cub_copy}'" in message


def test_missing_data_root(tmp_path):
    root = str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match=f'data_root {root} does not exist'):
        check_dataset_cfg(dict(type='FGVCAircraft', data_root=root, split='test'))


def test_listed_but_absent_image_is_named(cub_copy):
    with open(osp.join(cub_copy, 'images.txt')) as file:
        first_image = file.readline().split()[1]
    os.remove(osp.join(cub_copy, 'images', first_image))
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_cfg(dict(type='CUB', data_root=cub_copy, split='train'))
    message = str(info.value)
    # 4 classes x 6 training images
    assert '1 of 24 listed images are missing:' in message
    assert osp.join(cub_copy, 'images', first_image) in message


def test_find_missing_files_lists_each_folder_once(tmp_path, monkeypatch):
    for name in ('a.jpg', 'b.jpg'):
        (tmp_path / name).write_bytes(b'x')
    calls = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, 'listdir', lambda path: calls.append(path) or
                        real_listdir(path))
    paths = [str(tmp_path / n) for n in ('a.jpg', 'c.jpg', 'b.jpg')] + [
        str(tmp_path / 'sub' / 'd.jpg')]
    assert find_missing_files(paths) == [paths[1], paths[3]]
    assert calls == [str(tmp_path)]  # 'sub' does not exist: no listdir


def test_bad_split_and_unchecked_types():
    with pytest.raises(ValueError, match="split must be one of \\['train', 'test'\\], "
                       "got 'val'"):
        check_dataset_cfg(dict(type='CUB', data_root='/x', split='val'))
    # other dataset types are not checked
    assert check_dataset_cfg(dict(type='ImageNet', data_root='/does/not/exist')) is None


def test_kaggle_stanford_cars_copy_says_what_to_move(tmp_path):
    root = str(tmp_path / 'stanford-cars')
    write_jpg(osp.join(root, 'cars_train', 'cars_train', '00001.jpg'))
    write_jpg(osp.join(root, 'cars_test', 'cars_test', '00001.jpg'))
    for name in ('anno_train.csv', 'anno_test.csv', 'names.csv'):
        with open(osp.join(root, name), 'w') as file:
            file.write('00001.jpg,39,116,569,375,14\n')
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_cfg(dict(type='StanfordCars', data_root=root, split='train'))
    message = str(info.value)
    assert ('annotation file not found: '
            f"{osp.join(root, 'devkit', 'cars_train_annos.mat')}") in message
    nested = osp.join(root, 'cars_train', 'cars_train')
    assert (f'the images are nested one level too deep: move {nested}/*.jpg to '
            f"{osp.join(root, 'cars_train')}/") in message
    assert 'found CSV annotations (anno_test.csv, anno_train.csv, names.csv)' in message
    assert 'cars_test_annos_withlabels.mat  (split=\'test\')' in message  # the tree


def test_torchvision_stanford_cars_copy(tmp_path):
    root = str(tmp_path / 'stanford_cars')
    write_jpg(osp.join(root, 'cars_test', '00001.jpg'))
    os.makedirs(osp.join(root, 'devkit'))
    open(osp.join(root, 'devkit', 'cars_meta.mat'), 'wb').close()
    open(osp.join(root, 'cars_test_annos_withlabels.mat'), 'wb').close()
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_cfg(dict(type='StanfordCars', data_root=root, split='test'))
    message = str(info.value)
    assert ('annotation file not found: '
            f"{osp.join(root, 'devkit', 'cars_test_annos_withlabels.mat')}") in message
    assert (f"move {osp.join(root, 'cars_test_annos_withlabels.mat')} into "
            f"{osp.join(root, 'devkit')}/") in message


def make_aircraft_root(root: str, listed, present) -> None:
    os.makedirs(osp.join(root, 'data', 'images'))
    with open(osp.join(root, 'data', 'images_variant_test.txt'), 'w') as file:
        for name in listed:
            file.write(f'{name} 707-320\n')
    for name in present:
        write_jpg(osp.join(root, 'data', 'images', f'{name}.jpg'))


def test_aircraft_missing_images_and_root_at_data_folder(tmp_path):
    root = str(tmp_path / 'fgvc-aircraft-2013b')
    make_aircraft_root(root, listed=['0034309', '0034958', '0037511'],
                       present=['0034309'])
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_cfg(dict(type='FGVCAircraft', data_root=root, split='test'))
    message = str(info.value)
    assert '2 of 3 listed images are missing:' in message
    assert osp.join(root, 'data', 'images', '0034958.jpg') in message
    assert osp.join(root, 'data', 'images', '0037511.jpg') in message

    with pytest.raises(FileNotFoundError) as info:
        check_dataset_cfg(dict(type='FGVCAircraft', data_root=osp.join(root, 'data'),
                               split='test'))
    assert f"data_root points at the data/ folder itself: set data_root='{root}'" \
        in str(info.value)


def test_unreadable_annotation_is_a_value_error(cub_copy):
    with open(osp.join(cub_copy, 'train_test_split.txt'), 'a') as file:
        file.write('9999 1\n')  # an id that images.txt does not list
    with pytest.raises(ValueError, match='cannot read the annotations'):
        check_dataset_cfg(dict(type='CUB', data_root=cub_copy))


def test_check_config_datasets_walks_the_loaders(cub_copy, tmp_path):
    cfg = tiny_baseline_cfg(cub_copy, str(tmp_path / 'work'), max_iters=1)
    check_config_datasets(cfg)  # all good
    cfg.val_dataloader.dataset.data_root = str(tmp_path / 'missing_val')
    with pytest.raises(FileNotFoundError, match='missing_val does not exist'):
        check_config_datasets(cfg)
    # only the loaders asked for
    check_config_datasets(cfg, loader_names=('train_dataloader', ))
    # dataset wrappers are walked into
    cfg.train_dataloader.dataset = dict(type='RepeatDataset', times=2,
                                        dataset=dict(cfg.val_dataloader.dataset))
    with pytest.raises(FileNotFoundError, match='missing_val does not exist'):
        check_config_datasets(cfg, loader_names=('train_dataloader', ))


def test_cars_annos_mat_next_to_the_devkit_folders(tmp_path):
    root = str(tmp_path / 'cars')
    write_jpg(osp.join(root, 'cars_train', '00001.jpg'))
    open(osp.join(root, 'cars_annos.mat'), 'wb').close()
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_cfg(dict(type='StanfordCars', data_root=root))
    message = str(info.value)
    assert f"image folder not found: {osp.join(root, 'car_ims')}" in message
    assert 'to use cars_train/, cars_test/ and devkit/ instead, move cars_annos.mat ' \
        'out of data_root' in message


def test_cub_subclasses_are_checked_like_cub(cub_copy):
    os.remove(osp.join(cub_copy, 'images.txt'))
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_cfg(dict(type='SyntheticFGVC', data_root=cub_copy))
    message = str(info.value)
    assert message.startswith(f"SyntheticFGVC(data_root='{cub_copy}', split='train'): "
                              'annotation file not found: '
                              f"{osp.join(cub_copy, 'images.txt')}")
    assert 'SyntheticFGVC reads this layout:\n<data_root>/\n├── images/' in message
