# ConvNeXt at a third of ConvNeXt-T's width (32, 64, 128, 256 channels: those
# of the half-width ResNet-18 of resnet18_fgvc.py) with ConvNeXt-T's depths
# (3, 3, 9, 3): 3.2 M parameters and 61 MFLOPs at 64 px against the
# ResNet-18's 2.8 M and 65 M (mmengine's counter, last stage at stride 16 in
# both). A plain classifier as mmpretrain's ImageNet ConvNeXt (global average
# pool, then the last norm, then the linear head), started from the generic
# synthetic pretraining (configs/pretrain/convnext-w32_synthetic-generic.py).
convnext_w32_arch = dict(depths=[3, 3, 9, 3], channels=[32, 64, 128, 256])

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='DilatedConvNeXt',
        arch=convnext_w32_arch,
        out_indices=(3, ),
        gap_before_final_norm=True,
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/convnext-w32_synthetic-generic_64px.pth',
                      prefix='backbone')),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=256,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
    ),
)
