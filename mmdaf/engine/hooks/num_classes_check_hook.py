"""Stop before the first iteration when the heads' class count disagrees with
the data."""
from typing import List, Optional, Sequence, Tuple

import numpy as np
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import nn

# Module path in the model -> the config key users set.
DEFAULT_CLASS_COUNT_KEYS = (
    ('head', 'model.head.num_classes'),
    ('teacher.head', 'model.teacher.head.num_classes'),
    ('fusion_head', 'model.fusion_head.num_classes'),
    ('data_preprocessor', 'data_preprocessor.num_classes'),
)


def submodule_at(model: nn.Module, path: str) -> Optional[nn.Module]:
    """``model``'s submodule at the dotted attribute ``path``, None where a
    part of it is absent or None (a part the config switches off)."""
    module = model
    for name in path.split('.'):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def model_class_counts(model: nn.Module,
                       keys: Sequence[Tuple[str, str]] = DEFAULT_CLASS_COUNT_KEYS
                       ) -> List[Tuple[str, int]]:
    """(config key, num_classes) of every part of ``model`` that has one.

    Args:
        model (nn.Module): the (unwrapped) model.
        keys (Sequence[Tuple[str, str]]): (module path, config key) pairs.

    Returns:
        List[Tuple[str, int]]: e.g. ``[('model.head.num_classes', 200)]``; parts
        that are absent or whose ``num_classes`` is None are left out.
    """
    counts = []
    for path, key in keys:
        module = submodule_at(model, path)
        num_classes = getattr(module, 'num_classes', None)
        if isinstance(num_classes, int):
            counts.append((key, num_classes))
    return counts


def _gt_labels(dataset) -> Optional[np.ndarray]:
    """All ground-truth labels, through dataset wrappers; None if unknown."""
    if hasattr(dataset, 'get_gt_labels'):
        return np.asarray(dataset.get_gt_labels()).reshape(-1)
    if hasattr(dataset, 'datasets'):  # ConcatDataset
        parts = [_gt_labels(inner) for inner in dataset.datasets]
        if any(part is None for part in parts):
            return None
        return np.concatenate(parts) if parts else None
    if hasattr(dataset, 'dataset'):  # RepeatDataset, ClassBalancedDataset
        return _gt_labels(dataset.dataset)
    return None


def _has_own_class_list(dataset) -> bool:
    """Whether ``metainfo['classes']`` was set by the user (or the dataset
    reads it from its files) rather than the class's built-in list.

    mmpretrain's ``CUB`` always lists the 200 bird names of its ``METAINFO``,
    also when it reads a set in CUB's layout with fewer classes (mmdaf's
    synthetic set read with ``type='CUB'``); there the labels tell the class
    count.
    """
    classes = dataset.metainfo.get('classes')
    if classes is None:
        return False
    builtin = getattr(type(dataset), 'METAINFO', {}).get('classes')
    return builtin is None or tuple(classes) != tuple(builtin)


def dataset_class_count(dataset) -> Tuple[Optional[int], str]:
    """How many classes a dataset has, and how that was found.

    ``len(metainfo['classes'])`` when the class list is the user's own (see
    :func:`_has_own_class_list`), otherwise ``max(label) + 1`` over the split.

    Returns:
        tuple: (count or None when it cannot be told, a short explanation).
    """
    metainfo = getattr(dataset, 'metainfo', None) or {}
    if metainfo.get('classes') is not None and _has_own_class_list(dataset):
        return len(metainfo['classes']), "len(metainfo['classes'])"
    labels = _gt_labels(dataset)
    if labels is not None and labels.size > 0:
        return int(labels.max()) + 1, 'largest label + 1'
    if metainfo.get('classes') is not None:
        return len(metainfo['classes']), "len(metainfo['classes'])"
    return None, ''


def _describe_dataset(dataset) -> str:
    inner = dataset
    while hasattr(inner, 'dataset') and not hasattr(inner, 'data_root'):
        inner = inner.dataset
    data_root = getattr(inner, 'data_root', None)
    where = f" at '{data_root}'" if data_root else ''
    split = getattr(inner, 'split', None)
    split = f" (split '{split}')" if split else ''
    return f'{type(inner).__name__}{where}{split}'


def check_num_classes(model: nn.Module, dataset, loader_name: str) -> None:
    """Raise ``ValueError`` if a part of ``model`` has another class count than
    ``dataset``.

    Args:
        model (nn.Module): the model, wrapped (DDP) or not.
        dataset: the dataset of ``loader_name``.
        loader_name (str): e.g. ``'train_dataloader'``, for the message.
    """
    if is_model_wrapper(model):
        model = model.module
    num_classes, how = dataset_class_count(dataset)
    if num_classes is None:
        return
    wrong = [(key, count) for key, count in model_class_counts(model)
             if count != num_classes]
    if not wrong:
        return
    settings = ', '.join(f'{key}={count}' for key, count in wrong)
    fixes = ' '.join(f'{key}={num_classes}' for key, _ in wrong)
    raise ValueError(
        f'{settings} but the {loader_name} dataset {_describe_dataset(dataset)} '
        f'has {num_classes} classes ({how}). Set them to {num_classes} in the '
        f'config, e.g. --cfg-options {fixes}')


@HOOKS.register_module()
class NumClassesCheckHook(Hook):
    """Compare the model's class counts with the datasets before running.

    ``before_train`` checks the train dataset and (when validation is
    configured) the val dataset, so that a mismatch stops the run before the
    first iteration instead of at the first validation; ``before_val`` and
    ``before_test`` check the val/test dataset of standalone runs.

    The parts compared are ``model.head``, ``model.teacher.head``,
    ``model.fusion_head`` and the data preprocessor (when their
    ``num_classes`` is set); models wrapped in DDP are unwrapped. A dataset's
    class count is ``len(metainfo['classes'])`` when the class list is the
    user's own, otherwise the largest label + 1 of the split (mmpretrain's
    ``CUB`` lists 200 names for any set in its layout). A val/test split that
    lacks the last classes therefore needs ``metainfo=dict(classes=...)`` in
    its dataset config.

    Raises:
        ValueError: naming each disagreeing config key, its value, the
            dataset (type, root, split) and its class count.
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        # Validation runs every interval; each dataset is checked once.
        self._checked_datasets = set()

    def _check(self, runner, dataset, loader_name: str) -> None:
        if id(dataset) in self._checked_datasets:
            return
        check_num_classes(runner.model, dataset, loader_name)
        self._checked_datasets.add(id(dataset))

    def before_train(self, runner) -> None:
        self._check(runner, runner.train_dataloader.dataset, 'train_dataloader')
        if runner.val_loop is not None:
            self._check(runner, runner.val_dataloader.dataset, 'val_dataloader')

    def before_val(self, runner) -> None:
        self._check(runner, runner.val_dataloader.dataset, 'val_dataloader')

    def before_test(self, runner) -> None:
        self._check(runner, runner.test_dataloader.dataset, 'test_dataloader')
