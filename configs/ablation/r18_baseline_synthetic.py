# Small twin of r50_baseline_cub.py: plain ResNet-18 on the synthetic set.
_base_ = [
    '../_base_/models/resnet18_fgvc.py',
    '../_base_/datasets/synthetic_fgvc.py',
    '../_base_/schedules/synthetic_sgd.py',
    '../_base_/default_runtime.py',
]

default_hooks = dict(logger=dict(interval=10))
