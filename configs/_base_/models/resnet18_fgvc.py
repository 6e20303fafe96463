# ResNet-18 at half width (32 stem and base channels: 4x fewer FLOPs, so that
# the synthetic benchmarks train in minutes on CPU) for the synthetic set,
# started from the generic synthetic pretraining (tools/misc/pretrain_synthetic.py)
# like the DAF configs.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResNet',
        depth=18,
        stem_channels=32,
        base_channels=32,
        num_stages=4,
        out_indices=(3, ),
        style='pytorch',
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/r18-w32_synthetic-generic_64px.pth',
                      prefix='backbone')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=256,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
    ),
)
