# Small twin of r50_baseline_cub.py: plain ResNet-18 on the synthetic set.
_base_ = [
    '../_base_/models/resnet18_fgvc.py',
    '../_base_/datasets/synthetic_fgvc.py',
    '../_base_/schedules/synthetic_sgd.py',
    '../_base_/default_runtime.py',
]

default_hooks = dict(logger=dict(interval=10))

# Last stage at stride 16 (dilation 2), as in every synthetic DAF config: at
# 64 px a stride-32 C5 is 2x2, where CUB's 448 px give 14x14
# (docs/benchmarks_history.md, "Feature maps of 2x2").
model = dict(backbone=dict(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)))
