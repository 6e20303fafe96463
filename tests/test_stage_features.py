"""The student must return three (B, C, h, w) stages: a clear error naming the
backbone otherwise, from check_stage_features and from DAFClassifier."""
import copy

import pytest
import torch
import torch.nn as nn
from conftest import config_path, drop_synthetic_pretrained
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from mmdaf.models.backbones import NonReentrantCPBackbone
from mmdaf.models.utils.stage_features import backbone_type_name, check_stage_features


class Fake(nn.Module):
    """Stands for a backbone in the messages."""


def maps(*shapes):
    return tuple(torch.zeros(shape) for shape in shapes)


def test_three_maps_pass_unchanged():
    feats = maps((2, 4, 8, 8), (2, 8, 4, 4), (2, 16, 2, 2))
    checked = check_stage_features(list(feats), Fake())
    assert isinstance(checked, tuple)
    assert all(a is b for a, b in zip(checked, feats))
    assert check_stage_features(feats[-1:], Fake(), min_stages=1)[0] is feats[-1]


def test_too_few_stages_name_the_backbone_and_the_shapes():
    with pytest.raises(ValueError, match=r"the student backbone \(Fake\) returned 2 output\(s\) "
                       r"of shape\(s\) \[\(2, 4, 8, 8\), \(2, 8, 4, 4\)\]; it must return a "
                       r'tuple of at least 3 stage feature maps'):
        check_stage_features(maps((2, 4, 8, 8), (2, 8, 4, 4)), Fake(), role='student backbone')
    with pytest.raises(ValueError, match=r'returned a tensor of shape \(2, 16, 2, 2\)'):
        check_stage_features(torch.zeros(2, 16, 2, 2), Fake())


def test_vectors_are_not_stage_maps():
    feats = maps((2, 4, 8, 8), (2, 8), (2, 16, 2, 2))
    with pytest.raises(ValueError, match=r"output 1 is not a \(B, C, h, w\) feature map \(a ViT "
                       r"needs out_type='featmap'"):
        check_stage_features(feats, Fake())


def test_wrapper_names_the_wrapped_type():
    wrapper = NonReentrantCPBackbone(
        backbone=dict(type='ConvNeXt', arch=dict(depths=[1], channels=[4])))
    assert backbone_type_name(wrapper) == 'NonReentrantCPBackbone(ConvNeXt)'


def synthetic_daf(backbone: dict):
    """The synthetic R18 DAF-net (random weights) with another student."""
    init_default_scope('mmpretrain')
    cfg = copy.deepcopy(Config.fromfile(config_path('daf_r18_synthetic.py')).model)
    drop_synthetic_pretrained(cfg)
    cfg.backbone = backbone
    torch.manual_seed(0)
    return MODELS.build(cfg)


def daf_batch():
    return dict(inputs=torch.randn(2, 3, 64, 64),
                data_samples=[DataSample().set_gt_label(label) for label in (0, 1)])


@pytest.mark.parametrize('backbone, message', [
    # A ViT without feature maps: three class-token vectors (64 px, patch 16).
    (dict(type='VisionTransformer', img_size=64, patch_size=16, out_indices=(0, 1, 2),
          arch=dict(embed_dims=32, num_layers=3, num_heads=2, feedforward_channels=64)),
     r'student backbone \(VisionTransformer\) returned 3 output\(s\) of shape\(s\) '
     r'\[\(2, 32\), \(2, 32\), \(2, 32\)\]; output 0 is not a \(B, C, h, w\)'),
    # Only C5.
    (dict(type='ResNet', depth=18, out_indices=(3, )),
     r'student backbone \(ResNet\) returned 1 output\(s\) of shape\(s\) '
     r'\[\(2, 512, 2, 2\)\]; it must return a tuple of at least 3'),
])
def test_daf_classifier_refuses_a_student_without_three_stage_maps(backbone, message):
    model = synthetic_daf(backbone)
    with pytest.raises(ValueError, match=message):
        model(**daf_batch(), mode='loss')
    with pytest.raises(ValueError, match=message):
        model(daf_batch()['inputs'], mode='tensor')
