"""Fail early, and say what to run, when a config's local pretrained
checkpoint is missing."""
import os.path as osp
import re
from typing import Iterator, Tuple

# The generic synthetic pretraining: which command makes it.
SYNTHETIC_PRETRAINED_HINT = ('make it with `python tools/misc/pretrain_synthetic.py` '
                             '(or `make pretrained`), or pass --cfg-options '
                             '{key}=None to train from random weights')
# Another backbone's generic pretraining, checkpoints/<name>_64px.pth, is made
# from configs/pretrain/<name>.py.
OTHER_PRETRAINED_HINT = ('make it with `python tools/misc/pretrain_synthetic.py '
                         '--config configs/pretrain/{name}.py`, or pass --cfg-options '
                         '{key}=None to train from random weights')
DEFAULT_PRETRAINED_NAME = 'r18-w32_synthetic-generic'


def pretrained_init_cfgs(cfg, path: str = 'model') -> Iterator[Tuple[str, dict]]:
    """(config key, init_cfg) of every ``Pretrained`` init_cfg under ``cfg``."""
    if isinstance(cfg, dict):
        init_cfg = cfg.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            yield f'{path}.init_cfg', init_cfg
        for key, value in cfg.items():
            if key != 'init_cfg':
                yield from pretrained_init_cfgs(value, f'{path}.{key}')
    elif isinstance(cfg, (list, tuple)):
        for index, value in enumerate(cfg):
            yield from pretrained_init_cfgs(value, f'{path}[{index}]')


def check_local_pretrained(model_cfg) -> None:
    """Raise ``FileNotFoundError`` naming the config key and the file when a
    ``Pretrained`` init_cfg points at a local file that does not exist.
    URLs are left to mmengine (they are downloaded)."""
    for key, init_cfg in pretrained_init_cfgs(model_cfg):
        checkpoint = init_cfg.get('checkpoint')
        if not isinstance(checkpoint, str) or '://' in checkpoint:
            continue
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(
                f'{key}: pretrained checkpoint {checkpoint!r} does not exist; '
                + missing_pretrained_hint(checkpoint, key))


def missing_pretrained_hint(checkpoint: str, key: str) -> str:
    """What to run to make a missing local checkpoint."""
    match = re.fullmatch(r'(.+_synthetic-generic)_\d+px\.pth', osp.basename(checkpoint))
    if match and match.group(1) != DEFAULT_PRETRAINED_NAME:
        return OTHER_PRETRAINED_HINT.format(name=match.group(1), key=key)
    return SYNTHETIC_PRETRAINED_HINT.format(key=key)
