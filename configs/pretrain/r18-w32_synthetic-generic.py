# Pretraining on the generic synthetic set: what ImageNet is to CUB, emulated on
# CPU. tools/misc/pretrain_synthetic.py trains this config once and caches the
# checkpoint that the synthetic fine-grained configs load into the student and
# the teacher (init_cfg=dict(type='Pretrained', prefix='backbone')).
_base_ = [
    '../_base_/models/resnet18_fgvc.py',
    '../_base_/datasets/synthetic_generic.py',
    '../_base_/schedules/synthetic_sgd.py',
    '../_base_/default_runtime.py',
]

# From scratch: this is the run that makes the pretrained weights.
model = dict(backbone=dict(init_cfg=None), head=dict(num_classes=12))

# No horizontal flip: facing is half of the label.
train_pipeline = [
    dict(type='LoadImageFromFileSafe', skip_corrupt=False),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(lr=0.05))
param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True, T_max=12, eta_min=1e-4)
train_cfg = dict(max_epochs=12, val_interval=12)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=12, max_keep_ckpts=1))
