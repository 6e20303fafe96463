"""tools/misc/pretrain_synthetic.py: the cached generic pretraining checkpoint
loads into the synthetic configs' student and 5-channel teacher."""
import copy
import importlib.util
import os.path as osp

import torch
from conftest import REPO_ROOT, config_path
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

from mmdaf.datasets import make_synthetic_generic


def _load_tool():
    path = osp.join(REPO_ROOT, 'tools', 'misc', 'pretrain_synthetic.py')
    spec = importlib.util.spec_from_file_location('pretrain_synthetic', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def test_default_checkpoint_is_named_after_the_config():
    assert tool.parse_args([]).out == 'checkpoints/r18-w32_synthetic-generic_64px.pth'
    args = tool.parse_args(['--config', 'configs/pretrain/convnext-w32_synthetic-generic.py'])
    assert args.out == 'checkpoints/convnext-w32_synthetic-generic_64px.pth'
    # ... the checkpoint the ConvNeXt twin configs load.
    for name in ('daf_convnext-w32_synthetic.py',
                 'ablation/convnext-w32_baseline_synthetic.py'):
        model = Config.fromfile(config_path(name)).model
        assert model.backbone.init_cfg.checkpoint == args.out
    assert tool.parse_args(['--out', 'x.pth']).out == 'x.pth'


def test_cached_checkpoint_is_not_trained_again(tmp_path, capsys):
    out = tmp_path / 'cached.pth'
    out.write_bytes(b'not a checkpoint')
    assert tool.main(['--out', str(out), '--data-root', str(tmp_path / 'none')]) == str(out)
    assert 'pretrained checkpoint cached' in capsys.readouterr().out
    assert not (tmp_path / 'none').exists()  # nothing generated, nothing trained


def test_pretrains_and_loads_into_student_and_teacher(tmp_path, capsys):
    data_root = str(tmp_path / 'generic')
    make_synthetic_generic(data_root, train_per_class=2, test_per_class=1, img_size=32,
                           seed=3, num_workers=1)
    out = str(tmp_path / 'ckpt' / 'pretrained.pth')
    tool.main(['--out', out, '--data-root', data_root, '--work-dir',
               str(tmp_path / 'work'), '--cfg-options', 'train_cfg.max_epochs=1',
               'train_cfg.val_interval=1', 'train_dataloader.batch_size=8',
               'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
               'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
               'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
               'default_hooks.checkpoint.interval=1'])
    assert 'pretrained checkpoint: ' in capsys.readouterr().out
    checkpoint = torch.load(out, map_location='cpu', weights_only=True)
    assert not osp.exists(out + '.partial')
    assert 0.0 <= checkpoint['meta']['generic_test_top1'] <= 100.0
    backbone_keys = {k for k in checkpoint['state_dict'] if k.startswith('backbone.')}
    assert 'backbone.conv1.weight' in backbone_keys
    assert checkpoint['state_dict']['head.fc.weight'].shape == (12, 256)

    cfg = Config.fromfile(config_path('daf_r18_synthetic.py'))
    init_default_scope('mmpretrain')
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg.checkpoint = out
    model_cfg.teacher.backbone.init_cfg.checkpoint = out
    model = MODELS.build(model_cfg)
    model.init_weights()
    stem = checkpoint['state_dict']['backbone.conv1.weight']  # (32, 3, 3, 3)
    torch.testing.assert_close(model.backbone.conv1.weight.data, stem)
    teacher_stem = model.teacher.backbone.conv1.weight.data  # (32, 5, 3, 3)
    torch.testing.assert_close(teacher_stem[:, :3], stem)
    assert teacher_stem[:, 3:].abs().sum() == 0  # heatmap and mask channels start at 0
    last = 'backbone.layer4.1.conv2.weight'
    torch.testing.assert_close(model.teacher.backbone.layer4[1].conv2.weight.data,
                               checkpoint['state_dict'][last])
