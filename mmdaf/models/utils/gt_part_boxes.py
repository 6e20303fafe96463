"""The true part regions carried by the data samples (oracle controls only)."""
from typing import List, Optional

import torch
from mmpretrain.structures import DataSample
from torch import Tensor


def ground_truth_part_boxes(data_samples: Optional[List[DataSample]],
                            device: torch.device, dtype: torch.dtype) -> Tensor:
    """The (B, P, 4) ground-truth part regions carried by the data samples.

    Read only by the two oracle controls (``PooledPartHead(boxes=
    'ground_truth')`` and ``DAFTeacher(mask_boxes='ground_truth')``); nothing
    trains on part annotations otherwise.

    Args:
        data_samples (list[DataSample], optional): each with ``gt_bboxes``,
            a (P, 4) xyxy array or tensor in input pixels, the same P for all
            (``SyntheticFGVC(with_part_boxes=True)`` and ``PackInputs(
            algorithm_keys=('gt_bboxes', ))``).
        device (torch.device): where the boxes go.
        dtype (torch.dtype): their dtype.

    Returns:
        Tensor: (B, P, 4).
    """
    if not data_samples or any('gt_bboxes' not in sample for sample in data_samples):
        raise ValueError(
            "'ground_truth' boxes (part_pool.boxes, teacher.mask_boxes) need gt_bboxes "
            'on every data sample: '
            'load them with SyntheticFGVC(with_part_boxes=True) and carry them with '
            "PackInputs(algorithm_keys=('gt_bboxes', )) in the train and test pipelines")
    boxes = [torch.as_tensor(sample.gt_bboxes, dtype=dtype, device=device)
             for sample in data_samples]
    shapes = {tuple(box.shape) for box in boxes}
    if len(shapes) != 1 or len(boxes[0].shape) != 2 or boxes[0].shape[1] != 4:
        raise ValueError(f'gt_bboxes must be (P, 4) with the same P in every sample, '
                         f'got shapes {sorted(shapes)}')
    return torch.stack(boxes)
