# ConvNeXt twin of r18_baseline_synthetic.py: plain ConvNeXt-w32 on the
# synthetic set (configs/_base_/models/convnext-w32_fgvc.py), from the generic
# synthetic pretraining made by
#   python tools/misc/pretrain_synthetic.py \
#       --config configs/pretrain/convnext-w32_synthetic-generic.py
_base_ = [
    '../_base_/models/convnext-w32_fgvc.py',
    '../_base_/datasets/synthetic_fgvc.py',
    '../_base_/schedules/synthetic_sgd.py',
    '../_base_/default_runtime.py',
]

default_hooks = dict(logger=dict(interval=10))

# Last stage at stride 16 (downsample of stage 3 at stride 1, its depthwise
# convolutions dilated by 2), as in every synthetic config: at 64 px a
# stride-32 last stage is 2x2, where CUB's 448 px give 14x14
# (docs/benchmarks_history.md, "Feature maps of 2x2"). The weights are those learnt at
# stride 32 by the pretraining.
model = dict(backbone=dict(downsample_strides=(2, 2, 1), dilations=(1, 1, 1, 2)))
