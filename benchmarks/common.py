"""Helpers shared by the benchmark scripts.

- :data:`REPO_ROOT`, the repository the scripts run from;
- writing a benchmark's results: :func:`check_out_path` when the arguments are
  parsed, :func:`write_json` at the end. mmengine.dump picks the format from
  the file extension, so ``--out results`` used to run the whole benchmark and
  then fail with "Unsupported format", losing the results; these helpers write
  JSON whatever the name (JSON is also valid YAML) and check the path first;
- loading a config, a trained model and the config's test loader;
- reading the synthetic set's image ids and part boxes.

The scripts put :data:`REPO_ROOT` on ``sys.path`` before they import this
module, so ``python benchmarks/<script>.py`` works from any folder.
"""
import argparse
import copy
import json
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


# ----------------------------------------------------------------------------
# Writing results
# ----------------------------------------------------------------------------
def check_out_path(parser: argparse.ArgumentParser, path: Optional[str]) -> None:
    """Fail now, through ``parser.error``, if ``path`` cannot be written later.

    Creates the parent folder. Refuses an existing folder and a parent that is
    not writable.

    Args:
        parser (argparse.ArgumentParser): the script's parser, for the error.
        path (str, optional): the ``--out`` path; nothing is checked without one.
    """
    if not path:
        return
    if osp.isdir(path):
        parser.error(f'--out {path!r} is a folder; give a file name')
    parent = osp.dirname(osp.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        parser.error(f'--out {path!r}: cannot create {parent!r}: {error}')
    if not os.access(parent, os.W_OK):
        parser.error(f'--out {path!r}: folder {parent!r} is not writable')


def _to_json(value: Any) -> Any:
    """numpy and torch scalars and arrays, sets and tuples -> JSON types."""
    if hasattr(value, 'tolist'):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f'{type(value).__name__} is not JSON serialisable')


def write_json(result: Any, path: Optional[str]) -> None:
    """Write ``result`` as indented JSON to ``path`` (any extension); no-op
    without a path."""
    if not path:
        return
    with open(path, 'w') as handle:
        json.dump(result, handle, indent=2, default=_to_json)
    print(f'wrote {path}')


# ----------------------------------------------------------------------------
# Configs, models and test loaders
# ----------------------------------------------------------------------------
def load_config(config: str, cfg_options: Optional[dict] = None):
    """The config file with ``cfg_options`` merged in; its default scope set.

    Args:
        config (str): path of the config file.
        cfg_options (dict, optional): keys to override (``--cfg-options``).

    Returns:
        mmengine.config.Config: the config.
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmdaf  # noqa: F401  (registers components, allow-lists checkpoints)

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    return cfg


def model_cfg_with_preprocessor(cfg):
    """Copy of ``cfg.model`` with the config's top-level data preprocessor
    when the model has none of its own."""
    model_cfg = copy.deepcopy(cfg.model)
    if model_cfg.get('data_preprocessor') is None:
        model_cfg['data_preprocessor'] = cfg.get('data_preprocessor')
    return model_cfg


def load_trained_model(config_file: str, checkpoint: str,
                       cfg_options: Optional[dict] = None) -> Tuple[Any, Any]:
    """The config's model with the checkpoint's weights, in eval mode.

    Args:
        config_file (str): the config, e.g. the one a run dumped into its
            work dir.
        checkpoint (str): the weights to load.
        cfg_options (dict, optional): keys to override before the model is
            built (``--cfg-options``), e.g. an inference-time NMS threshold.

    Returns:
        tuple: ``(cfg, model)``; the model has the config's top-level data
        preprocessor.
    """
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    cfg = load_config(config_file, cfg_options)
    model = MODELS.build(model_cfg_with_preprocessor(cfg))
    load_checkpoint(model, checkpoint, map_location='cpu', logger='silent')
    model.eval()
    return cfg, model


def build_test_loader(cfg, data_root: str, **overrides):
    """The config's test loader on ``data_root``, in this process.

    Args:
        cfg (mmengine.config.Config): the config.
        data_root (str): root of the data set to read.
        **overrides: loader keys to set (``batch_size``, ``dataset``, ...).

    Returns:
        torch.utils.data.DataLoader: the loader, without worker processes.
    """
    from mmengine.runner import Runner
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    loader_cfg.update(num_workers=0, persistent_workers=False, **overrides)
    loader_cfg.dataset.data_root = data_root
    return Runner.build_dataloader(loader_cfg)


# ----------------------------------------------------------------------------
# The synthetic set's annotation files
# ----------------------------------------------------------------------------
def read_part_box_rows(data_root: str) -> Dict[int, List[Tuple[int, List[float]]]]:
    """image id -> its ``(part id, [x1, y1, x2, y2])`` rows of
    ``parts/part_boxes.txt``, in file order (the dataset's reader)."""
    from mmdaf.datasets import read_part_box_rows as read_rows
    return read_rows(data_root)


def read_part_boxes(data_root: str) -> Dict[int, np.ndarray]:
    """image id -> (P, 4) xyxy part regions from ``parts/part_boxes.txt``."""
    return {image_id: np.array([box for _, box in parts])
            for image_id, parts in read_part_box_rows(data_root).items()}


def read_object_boxes(data_root: str) -> Dict[int, np.ndarray]:
    """image id -> (4, ) xyxy object box from ``bounding_boxes.txt``
    (``<image_id> <x> <y> <width> <height>``, the CUB layout)."""
    path = osp.join(data_root, 'bounding_boxes.txt')
    boxes = {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if len(fields) != 5:
                raise ValueError(f'{path}:{line_no}: expected <image_id> <x> <y> '
                                 f'<width> <height>, got {line.strip()!r}')
            x, y, width, height = map(float, fields[1:])
            boxes[int(fields[0])] = np.array([x, y, x + width, y + height])
    return boxes


def read_image_ids(data_root: str) -> Dict[str, int]:
    """relative image path -> image id from ``images.txt``."""
    ids = {}
    with open(osp.join(data_root, 'images.txt')) as f:
        for line in f:
            image_id, rel_path = line.split()
            ids[rel_path] = int(image_id)
    return ids
