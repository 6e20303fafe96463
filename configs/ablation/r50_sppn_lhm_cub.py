# Paper Table 3, row 3: ResNet-50 + SPPN + location heatmap (the student net).
_base_ = [
    '../_base_/models/daf_r50.py',
    '../_base_/datasets/cub.py',
    '../_base_/schedules/fgvc_sgd_100e.py',
    '../_base_/default_runtime.py',
]

model = dict(teacher=None, distill=None, fusion_head=None)
