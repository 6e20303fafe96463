# Paper Table 3, row 1: plain ResNet-50 on CUB-200-2011 at 448.
_base_ = [
    '../_base_/models/resnet50_fgvc.py',
    '../_base_/datasets/cub.py',
    '../_base_/schedules/fgvc_sgd_100e.py',
    '../_base_/default_runtime.py',
]

model = dict(head=dict(num_classes=200))
