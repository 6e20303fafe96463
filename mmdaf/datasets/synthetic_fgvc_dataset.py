"""The synthetic fine-grained set as an mmpretrain dataset."""
import os.path as osp
from typing import List

from mmengine.fileio import list_from_file
from mmpretrain.datasets import CUB
from mmpretrain.registry import DATASETS


def read_cub_class_names(path: str) -> List[str]:
    """Class names from a CUB ``classes.txt`` (``<id> <NNN.Name>`` lines).

    Returns:
        list[str]: the names in id order, without the ``NNN.`` prefix.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: class list not found; a CUB_200_2011 root '
                                'has classes.txt with lines "<class_id> <NNN.Name>"')
    names = {}
    for line_no, line in enumerate(list_from_file(path), start=1):
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise ValueError(f'{path}:{line_no}: expected "<class_id> <NNN.Name>", '
                             f'got {line!r}')
        names[int(fields[0])] = fields[1].split('.', 1)[-1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise ValueError(f'{path}: class ids must be 1..{len(names)}')
    return [names[class_id] for class_id in sorted(names)]


@DATASETS.register_module()
class SyntheticFGVC(CUB):
    """mmpretrain's ``CUB`` dataset reading the synthetic set, with its own
    class names.

    ``CUB`` always reports the 200 bird species as its classes, whatever its
    ``classes.txt`` says; the synthetic set has its own classes, so their names
    (and count, which checks and visualisations rely on) come from the root's
    ``classes.txt`` unless ``metainfo`` or ``classes`` is given.

    Args:
        data_root (str): a CUB_200_2011-layout root written by
            ``tools/misc/make_synthetic_fgvc.py``.
        split (str): ``'train'`` or ``'test'``.
        **kwargs: passed to ``CUB``.
    """

    def __init__(self, data_root: str, split: str = 'train', **kwargs) -> None:
        if 'metainfo' not in kwargs and 'classes' not in kwargs:
            class_names = read_cub_class_names(osp.join(data_root, 'classes.txt'))
            kwargs['metainfo'] = dict(classes=class_names)
        super().__init__(data_root=data_root, split=split, **kwargs)
