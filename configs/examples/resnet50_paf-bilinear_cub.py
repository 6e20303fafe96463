# Using mmdaf's PAF-bilinear neck in a plain mmpretrain ImageClassifier: without
# a saliency mask it is grouped bilinear pooling (semantic grouping + group
# bilinear + signed sqrt + L2). Its output size is reduced_channels**2 /
# num_groups, 512**2 / 16 = 16384 here: set the head's in_channels to it.
# output_scale=16 lets a linear head at the usual learning rate reach useful logits
# on the unit-norm vector.
_base_ = [
    '../_base_/datasets/cub.py',
    '../_base_/schedules/fgvc_sgd_100e.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmdaf'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=50, out_indices=(3, )),
    # use_attention=False: ImageClassifier passes no saliency mask, so the
    # part attention filter would never run and its unused parameters would
    # stop DistributedDataParallel (without find_unused_parameters).
    neck=dict(type='PAFBilinearNeck', in_channels=2048, reduced_channels=512, num_groups=16,
              use_attention=False, output_scale=16.0),
    head=dict(type='LinearClsHead', num_classes=200, in_channels=16384, topk=(1, )),
)
