# The generic synthetic pretraining of r18-w32_synthetic-generic.py for the
# ConvNeXt twin (configs/_base_/models/convnext-w32_fgvc.py): same data,
# schedule and epochs, so the two backbones start their fine-grained runs from
# the same kind of weights. Make the checkpoint with
#   python tools/misc/pretrain_synthetic.py \
#       --config configs/pretrain/convnext-w32_synthetic-generic.py
# which writes checkpoints/convnext-w32_synthetic-generic_64px.pth. Standard
# ConvNeXt strides (32 at the last stage); the fine-grained configs run the
# last stage at stride 16 with dilation 2 on these weights, as the ResNet-18
# ones do. Same schedule as the ResNet-18's, but AdamW (below).
_base_ = [
    '../_base_/models/convnext-w32_fgvc.py',
    '../_base_/datasets/synthetic_generic.py',
    '../_base_/schedules/synthetic_sgd.py',
    '../_base_/default_runtime.py',
]

# From scratch: this is the run that makes the pretrained weights. ConvNeXt's
# own init (its LayerNorms start at 1 and 0 when built).
model = dict(
    backbone=dict(init_cfg=dict(_delete_=True, type='TruncNormal',
                                layer=['Conv2d', 'Linear'], std=0.02, bias=0.0)),
    head=dict(num_classes=12))

# No horizontal flip: facing is half of the label.
train_pipeline = [
    dict(type='LoadImageFromFileSafe', skip_corrupt=False),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# AdamW, ConvNeXt's own recipe: with the ResNet-18's SGD (lr 0.05) the loss
# stayed at ln(12) = 2.48, chance, for 5 epochs.
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-3, weight_decay=0.05))
param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True, T_max=12, eta_min=1e-4)
train_cfg = dict(max_epochs=12, val_interval=12)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=12, max_keep_ckpts=1))
