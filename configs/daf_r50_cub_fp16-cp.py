# daf_r50_cub.py with the memory savers for 448 inputs: mixed precision (AMP,
# needs a GPU) and activation checkpointing in both backbones. A DAF step runs
# about six ResNet-50 passes per image (student, N=4 part images, teacher);
# docs/distributed_and_inference.md#memory-at-448 lists the memory per image with and without these.
_base_ = ['./daf_r50_cub.py']

model = dict(
    backbone=dict(with_cp=True),
    teacher=dict(backbone=dict(with_cp=True)),
)

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
