"""A missing local pretrained checkpoint stops training with the key, the file
and the command that makes it."""
import pytest
from conftest import config_path
from mmengine.config import Config

from mmdaf.utils import check_local_pretrained, pretrained_init_cfgs


def test_finds_every_pretrained_init_with_its_key():
    cfg = Config.fromfile(config_path('daf_r18_synthetic.py'))
    keys = [key for key, _ in pretrained_init_cfgs(cfg.model)]
    assert keys == ['model.backbone.init_cfg', 'model.teacher.backbone.init_cfg']


def test_missing_local_checkpoint_names_key_file_and_command(tmp_path):
    model = dict(backbone=dict(init_cfg=dict(type='Pretrained',
                                             checkpoint=str(tmp_path / 'none.pth'))),
                 head=dict(init_cfg=dict(type='Pretrained', checkpoint='https://x/y.pth')))
    with pytest.raises(FileNotFoundError, match=r"model.backbone.init_cfg: pretrained "
                       r"checkpoint '.*none.pth' does not exist; make it with "
                       r"`python tools/misc/pretrain_synthetic.py`"):
        check_local_pretrained(model)
    (tmp_path / 'none.pth').write_bytes(b'')
    check_local_pretrained(model)  # present; the URL is left to mmengine


def test_another_backbones_checkpoint_names_its_pretraining_config(tmp_path):
    cfg = Config.fromfile(config_path('daf_convnext-w32_synthetic.py'))
    keys = [key for key, _ in pretrained_init_cfgs(cfg.model)]
    assert keys == ['model.backbone.init_cfg', 'model.teacher.backbone.init_cfg']
    assert cfg.model.backbone.init_cfg.checkpoint == \
        'checkpoints/convnext-w32_synthetic-generic_64px.pth'
    missing = str(tmp_path / 'convnext-w32_synthetic-generic_64px.pth')
    cfg.model.backbone.init_cfg.checkpoint = missing
    cfg.model.teacher.backbone.init_cfg.checkpoint = missing
    with pytest.raises(FileNotFoundError, match=r"model.backbone.init_cfg: pretrained checkpoint "
                       r"'.*convnext-w32_synthetic-generic_64px.pth' does not exist; make it "
                       r"with `python tools/misc/pretrain_synthetic.py --config "
                       r"configs/pretrain/convnext-w32_synthetic-generic.py`"):
        check_local_pretrained(cfg.model)
