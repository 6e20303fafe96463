# Paper Table 3, row 4: student + teacher + class score fusion, no distillation.
_base_ = [
    '../_base_/models/daf_r50.py',
    '../_base_/datasets/cub.py',
    '../_base_/schedules/fgvc_sgd_100e.py',
    '../_base_/default_runtime.py',
]

model = dict(distill=None)
