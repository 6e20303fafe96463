"""Check a dataset root before training: layout, annotation files, images.

mmpretrain's ``CUB``, ``StanfordCars`` and ``FGVCAircraft`` fail on a wrong root
with errors that do not say what was expected (an ``AssertionError`` on ids, a
``RuntimeError`` with a link, or a ``FileNotFoundError`` on one image in the
middle of the first epoch). :func:`check_dataset_cfg` runs before the Runner is
built and raises ``FileNotFoundError`` / ``ValueError`` with:

- the path that is missing or wrong,
- the layout the dataset class reads, as a short tree,
- for wrong layouts we recognise (the Kaggle copy of Stanford Cars with its
  nested ``cars_train/cars_train`` folders and no devkit, CSV annotations, the
  torchvision copy, a ``data_root`` one level too high or too low), what to move
  where.

Then it reads the annotations with the dataset class itself (no pipeline) and
checks that every listed image exists, with one ``os.listdir`` per image folder.
"""
import copy
import inspect
import os
import os.path as osp
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

CUB_LAYOUT = """\
<data_root>/
├── images/<class folder>/<image>.jpg
├── images.txt              <image_id> <class folder>/<image>.jpg
├── image_class_labels.txt  <image_id> <class_id>
└── train_test_split.txt    <image_id> <1 = train | 0 = test>"""

STANFORD_CARS_LAYOUT = """\
<data_root>/                          either
├── car_ims/<image>.jpg
└── cars_annos.mat
<data_root>/                          or (the devkit layout)
├── cars_train/<image>.jpg
├── cars_test/<image>.jpg
└── devkit/
    ├── cars_meta.mat
    ├── cars_train_annos.mat          (split='train')
    └── cars_test_annos_withlabels.mat  (split='test')"""

FGVC_AIRCRAFT_LAYOUT = """\
<data_root>/                          (fgvc-aircraft-2013b)
└── data/
    ├── images/<image>.jpg
    └── images_variant_<split>.txt    <image> <variant name>, split in
                                      train | val | trainval | test"""

# Max. missing image paths quoted in an error message.
NUM_QUOTED_PATHS = 5


def _type_name(dataset_cfg: dict) -> str:
    """'CUB' for ``type='CUB'``, ``type='mmpretrain.CUB'`` or the class."""
    dataset_type = dataset_cfg.get('type', '')
    if not isinstance(dataset_type, str):
        dataset_type = getattr(dataset_type, '__name__', '')
    return dataset_type.split('.')[-1]


def _checked_layout(dataset_cfg: dict) -> Optional[str]:
    """The checked class that the dataset type is or derives from ('CUB' for
    mmdaf's ``SyntheticFGVC``), or None."""
    from mmpretrain.registry import DATASETS

    dataset_type = dataset_cfg.get('type', '')
    dataset_class = (dataset_type if inspect.isclass(dataset_type) else
                     DATASETS.get(dataset_type) if isinstance(dataset_type, str)
                     else None)
    if dataset_class is None:
        return None
    for base in dataset_class.__mro__:
        if base.__module__.startswith('mmpretrain.') and base.__name__ in \
                DATASET_LAYOUTS:
            return base.__name__
    return None


def _describe(name: str, data_root: str, split: str) -> str:
    return f"{name}(data_root='{data_root}', split='{split}')"


def _error_text(what: str, name: str, data_root: str, split: str, layout: str,
                hints: Sequence[str]) -> str:
    lines = [f'{_describe(name, data_root, split)}: {what}']
    if hints:
        lines.append('This looks like a copy in another layout:')
        lines += [f'  - {hint}' for hint in hints]
    lines.append(f'{name} reads this layout:')
    lines.append(layout)
    return '\n'.join(lines)


def _subfolder_with(data_root: str, relative_path: str) -> Optional[str]:
    """A direct sub-folder of ``data_root`` that holds ``relative_path``."""
    if not osp.isdir(data_root):
        return None
    for name in sorted(os.listdir(data_root)):
        candidate = osp.join(data_root, name)
        if osp.isdir(candidate) and osp.exists(osp.join(candidate, relative_path)):
            return candidate
    return None


def _cub_hints(data_root: str) -> List[str]:
    hints = []
    nested = _subfolder_with(data_root, 'images.txt')
    if nested is not None:
        hints.append(f"data_root is one level too high: set data_root='{nested}'")
    return hints


def _stanford_cars_hints(data_root: str) -> List[str]:
    hints = []
    for folder in ('cars_train', 'cars_test'):
        nested = osp.join(data_root, folder, folder)
        if osp.isdir(nested):
            # The Kaggle copies (e.g. jessicali9530/stanford-cars-dataset).
            hints.append(f'the images are nested one level too deep: move '
                         f'{nested}/*.jpg to {osp.join(data_root, folder)}/ '
                         f"(mv '{nested}'/* '{osp.join(data_root, folder)}'/ "
                         f"&& rmdir '{nested}')")
    for devkit in (osp.join(data_root, 'car_devkit', 'devkit'),
                   osp.join(data_root, 'car_devkit')):
        if osp.isfile(osp.join(devkit, 'cars_train_annos.mat')):
            hints.append(f'the devkit is at {devkit}: move that folder to '
                         f"{osp.join(data_root, 'devkit')}")
            break
    if (osp.isfile(osp.join(data_root, 'cars_annos.mat'))
            and not osp.isdir(osp.join(data_root, 'car_ims'))
            and osp.isdir(osp.join(data_root, 'cars_train'))):
        hints.append(f"{osp.join(data_root, 'cars_annos.mat')} makes mmpretrain read "
                     'car_ims/, which is absent; to use cars_train/, cars_test/ and '
                     'devkit/ instead, move cars_annos.mat out of data_root')
    root_labels = osp.join(data_root, 'cars_test_annos_withlabels.mat')
    if osp.isfile(root_labels):
        # torchvision's StanfordCars keeps the test labels next to the folders.
        hints.append(f'move {root_labels} into '
                     f"{osp.join(data_root, 'devkit')}/")
    if osp.isdir(data_root):
        csv_files = sorted(name for name in os.listdir(data_root)
                           if name.lower().endswith('.csv'))
        if csv_files:
            hints.append(f'found CSV annotations ({", ".join(csv_files)}): '
                         'mmpretrain reads the .mat annotations of the original '
                         'devkit (car_devkit.tgz and cars_test_annos_withlabels.mat '
                         'from the Stanford Cars page), not CSV; put those under '
                         f"{osp.join(data_root, 'devkit')}/")
    nested_root = _subfolder_with(data_root, 'devkit')
    if nested_root is not None and not osp.isdir(osp.join(data_root, 'devkit')):
        hints.append(f"data_root is one level too high: set data_root='{nested_root}'")
    return hints


def _fgvc_aircraft_hints(data_root: str) -> List[str]:
    hints = []
    if osp.basename(osp.normpath(data_root)) == 'data' and osp.isdir(
            osp.join(data_root, 'images')):
        hints.append('data_root points at the data/ folder itself: set '
                     f"data_root='{osp.dirname(osp.normpath(data_root))}'")
    nested = _subfolder_with(data_root, 'data')
    if nested is not None and not osp.isdir(osp.join(data_root, 'data')):
        hints.append(f"data_root is one level too high: set data_root='{nested}'")
    return hints


def _cub_required(data_root: str, split: str) -> List[Tuple[str, bool]]:
    """(path, is_folder) that CUB reads, in the order it reads them."""
    return [(osp.join(data_root, 'images.txt'), False),
            (osp.join(data_root, 'image_class_labels.txt'), False),
            (osp.join(data_root, 'train_test_split.txt'), False),
            (osp.join(data_root, 'images'), True)]


def _stanford_cars_required(data_root: str, split: str) -> List[Tuple[str, bool]]:
    if osp.isfile(osp.join(data_root, 'cars_annos.mat')):
        return [(osp.join(data_root, 'car_ims'), True)]
    annotations = ('cars_train_annos.mat'
                   if split == 'train' else 'cars_test_annos_withlabels.mat')
    return [(osp.join(data_root, 'devkit', annotations), False),
            (osp.join(data_root, f'cars_{split}'), True)]


def _fgvc_aircraft_required(data_root: str, split: str) -> List[Tuple[str, bool]]:
    return [(osp.join(data_root, 'data', f'images_variant_{split}.txt'), False),
            (osp.join(data_root, 'data', 'images'), True)]


# type name -> (layout tree, default split, valid splits, required paths, hints)
DATASET_LAYOUTS: Dict[str, tuple] = {
    'CUB': (CUB_LAYOUT, 'train', ('train', 'test'), _cub_required, _cub_hints),
    'StanfordCars': (STANFORD_CARS_LAYOUT, 'train', ('train', 'test'),
                     _stanford_cars_required, _stanford_cars_hints),
    'FGVCAircraft': (FGVC_AIRCRAFT_LAYOUT, 'trainval',
                     ('train', 'val', 'trainval', 'test'), _fgvc_aircraft_required,
                     _fgvc_aircraft_hints),
}


def _listed_image_paths(dataset_cfg: dict) -> List[str]:
    """Image paths of the dataset's annotation, read by the dataset class."""
    from mmpretrain.registry import DATASETS

    cfg = copy.deepcopy(dict(dataset_cfg))
    cfg.update(pipeline=[], lazy_init=False, serialize_data=False)
    # The three checked types are mmpretrain's, whatever the current scope.
    cfg.setdefault('_scope_', 'mmpretrain')
    dataset = DATASETS.build(cfg)
    return [info['img_path'] for info in dataset.data_list]


def find_missing_files(paths: Sequence[str]) -> List[str]:
    """The paths that do not exist, with one ``os.listdir`` per folder.

    Args:
        paths (Sequence[str]): file paths.

    Returns:
        List[str]: the missing ones, in input order.
    """
    names_in_folder: Dict[str, Optional[set]] = {}
    missing = []
    for path in paths:
        folder, name = osp.split(path)
        if folder not in names_in_folder:
            names_in_folder[folder] = (set(os.listdir(folder))
                                       if osp.isdir(folder) else None)
        names = names_in_folder[folder]
        if names is None or name not in names:
            missing.append(path)
    return missing


def check_dataset_cfg(dataset_cfg: dict) -> None:
    """Check the root of a ``CUB``, ``StanfordCars`` or ``FGVCAircraft`` config.

    Subclasses (e.g. mmdaf's ``SyntheticFGVC``, a ``CUB``) are checked against
    their base's layout. Other dataset types (and configs without
    ``data_root``) are not checked.

    Args:
        dataset_cfg (dict): a dataset config, e.g. ``train_dataloader.dataset``.

    Raises:
        FileNotFoundError: ``data_root``, an annotation file, the image folder
            or a listed image is missing. The message names the path, the
            layout the dataset reads and, for a recognised other layout, what
            to move where.
        ValueError: an unknown ``split``, or annotation files the dataset class
            cannot read.
    """
    name = _type_name(dataset_cfg)
    base_name = _checked_layout(dataset_cfg)
    if base_name is None or dataset_cfg.get('data_root') is None:
        return
    layout, default_split, splits, required_paths, find_hints = \
        DATASET_LAYOUTS[base_name]
    data_root = str(dataset_cfg['data_root'])
    split = dataset_cfg.get('split', default_split)
    if split not in splits:
        raise ValueError(f'{_describe(name, data_root, split)}: split must be one of '
                         f'{list(splits)}, got {split!r}')
    if not osp.isdir(data_root):
        raise FileNotFoundError(_error_text(
            f'data_root {data_root} does not exist (relative paths start at '
            f'{os.getcwd()})', name, data_root, split, layout, []))

    hints = find_hints(data_root)
    for path, is_folder in required_paths(data_root, split):
        exists = osp.isdir(path) if is_folder else osp.isfile(path)
        if not exists:
            kind = 'image folder' if is_folder else 'annotation file'
            raise FileNotFoundError(_error_text(
                f'{kind} not found: {path}', name, data_root, split, layout, hints))

    try:
        image_paths = _listed_image_paths(dataset_cfg)
    except Exception as error:
        raise ValueError(_error_text(
            f'cannot read the annotations ({type(error).__name__}: {error})', name,
            data_root, split, layout, hints)) from error
    if not image_paths:
        raise ValueError(_error_text('the annotations list no image for this split',
                                     name, data_root, split, layout, hints))
    missing = find_missing_files(image_paths)
    if missing:
        quoted = '\n'.join(f'    {path}' for path in missing[:NUM_QUOTED_PATHS])
        more = (f'\n    ... and {len(missing) - NUM_QUOTED_PATHS} more'
                if len(missing) > NUM_QUOTED_PATHS else '')
        raise FileNotFoundError(_error_text(
            f'{len(missing)} of {len(image_paths)} listed images are missing:\n'
            f'{quoted}{more}', name, data_root, split, layout, hints))


def _dataset_cfgs(dataset_cfg: dict) -> Iterator[dict]:
    """The dataset config and those inside wrappers (``dataset``/``datasets``)."""
    yield dataset_cfg
    inner = dataset_cfg.get('dataset')
    if isinstance(inner, dict):
        yield from _dataset_cfgs(inner)
    for inner in dataset_cfg.get('datasets', None) or []:
        if isinstance(inner, dict):
            yield from _dataset_cfgs(inner)


def check_config_datasets(cfg,
                          loader_names: Sequence[str] = ('train_dataloader',
                                                         'val_dataloader',
                                                         'test_dataloader')) -> None:
    """Run :func:`check_dataset_cfg` on the dataset of each dataloader.

    Datasets shared by several loaders (e.g. ``test_dataloader =
    val_dataloader``) are checked once.

    Args:
        cfg (Config | dict): a full training/test config.
        loader_names (Sequence[str]): the dataloader keys to check; absent or
            None loaders are skipped.
    """
    checked = set()
    for loader_name in loader_names:
        loader = cfg.get(loader_name, None)
        if not loader or not isinstance(loader.get('dataset'), dict):
            continue
        for dataset_cfg in _dataset_cfgs(loader['dataset']):
            key = (_type_name(dataset_cfg), str(dataset_cfg.get('data_root')),
                   str(dataset_cfg.get('split')))
            if key in checked:
                continue
            checked.add(key)
            check_dataset_cfg(dataset_cfg)


__all__ = ['check_dataset_cfg', 'check_config_datasets', 'find_missing_files',
           'DATASET_LAYOUTS']
