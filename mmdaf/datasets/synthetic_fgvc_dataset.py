"""The synthetic fine-grained set as an mmpretrain dataset."""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
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


def read_part_box_rows(data_root: str) -> Dict[int, List[Tuple[int, List[float]]]]:
    """image id -> its ``(part id, [x1, y1, x2, y2])`` rows of
    ``parts/part_boxes.txt``, in file order."""
    path = osp.join(data_root, 'parts', 'part_boxes.txt')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} not found; write the set with '
                                'mmdaf.datasets.make_synthetic_fgvc')
    rows: Dict[int, List[Tuple[int, List[float]]]] = {}
    for line_no, line in enumerate(list_from_file(path), start=1):
        fields = line.split()
        if len(fields) != 6:
            raise ValueError(f'{path}:{line_no}: expected "<image_id> <part_id> '
                             f'<x1> <y1> <x2> <y2>", got {line!r}')
        rows.setdefault(int(fields[0]), []).append(
            (int(fields[1]), [float(v) for v in fields[2:]]))
    return rows


def centred_squares(boxes: np.ndarray, side: float) -> np.ndarray:
    """(P, 4) xyxy squares of ``side`` centred on the (P, 4) xyxy ``boxes``."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.float32(side / 2)
    return np.concatenate([centres - half, centres + half], axis=1).astype(boxes.dtype)


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
        with_part_boxes (bool): also give each sample its ground-truth part
            regions from ``parts/part_boxes.txt`` as ``gt_bboxes``, a (P, 4)
            float32 xyxy array in image pixels (P parts, in part id order),
            under the key that mmcv's ``RandomFlip`` flips with the image. A
            model reads them only when ``PackInputs`` carries them
            (``algorithm_keys=('gt_bboxes', )``), as the oracle control
            ``DAFClassifier(part_pool=dict(boxes='ground_truth'))`` does.
            Defaults to False.
        part_ids (Sequence[int], optional): with ``with_part_boxes``, only
            these parts (ids of ``parts/parts.txt``), in this order. None
            (default) gives every part.
        part_box_size (float, optional): with ``with_part_boxes``, give each
            part a square of this side centred on its region instead of the
            region itself. A region's extent can carry the class (the
            synthetic crown's area is 57-150 px² by crest shape); a fixed
            square carries only where the part is. None (default) gives the
            regions.
        **kwargs: passed to ``CUB``.
    """

    def __init__(self, data_root: str, split: str = 'train',
                 with_part_boxes: bool = False,
                 part_ids: Optional[Sequence[int]] = None,
                 part_box_size: Optional[float] = None, **kwargs) -> None:
        if 'metainfo' not in kwargs and 'classes' not in kwargs:
            class_names = read_cub_class_names(osp.join(data_root, 'classes.txt'))
            kwargs['metainfo'] = dict(classes=class_names)
        if (part_ids is not None or part_box_size is not None) and not with_part_boxes:
            raise ValueError('SyntheticFGVC: part_ids and part_box_size need '
                             'with_part_boxes=True')
        if part_box_size is not None and part_box_size <= 0:
            raise ValueError(f'SyntheticFGVC: part_box_size must be > 0, got {part_box_size}')
        self.part_box_size = part_box_size
        self.with_part_boxes = with_part_boxes
        self.part_ids = None if part_ids is None else [int(i) for i in part_ids]
        super().__init__(data_root=data_root, split=split, **kwargs)

    def load_data_list(self) -> List[dict]:
        data_list = super().load_data_list()
        if not self.with_part_boxes:
            return data_list
        image_ids = self._image_ids_by_path()
        part_rows = read_part_box_rows(self.data_root)
        for info in data_list:
            image_id = image_ids[info['img_path']]
            if image_id not in part_rows:
                raise ValueError(f'{self.data_root}/parts/part_boxes.txt has no part '
                                 f'boxes for image {image_id} ({info["img_path"]})')
            boxes = dict(part_rows[image_id])
            wanted = sorted(boxes) if self.part_ids is None else self.part_ids
            missing = [part_id for part_id in wanted if part_id not in boxes]
            if missing:
                raise ValueError(f'{self.data_root}/parts/part_boxes.txt: image {image_id} '
                                 f'has no part {missing[0]} (part_ids={self.part_ids})')
            regions = np.array([boxes[part_id] for part_id in wanted], dtype=np.float32)
            info['gt_bboxes'] = regions if self.part_box_size is None else \
                centred_squares(regions, self.part_box_size)
        return data_list

    def _image_ids_by_path(self) -> Dict[str, int]:
        # The same join as CUB.load_data_list, so that the paths match; its
        # reader counts the ids of images.txt from 0.
        return {self.backend.join_path(self.img_prefix, rel_path): index + 1
                for index, rel_path in self._load_data_from_txt(self.ann_file).items()}
