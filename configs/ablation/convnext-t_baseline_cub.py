# The baseline of daf_convnext-t_cub.py: plain ConvNeXt-T classifier
# (mmpretrain's ImageNet-1k weights) on CUB-200-2011 at 448, as
# r50_baseline_cub.py is for ResNet-50; same data, schedule and runtime.
_base_ = ['./r50_baseline_cub.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='ConvNeXt',
        arch='tiny',
        drop_path_rate=0.1,  # as daf_convnext-t_cub.py
        # The ImageNet model's head input: global average pool, then norm3.
        gap_before_final_norm=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/convnext/'
            'convnext-tiny_32xb128_in1k_20221207-998cf3e9.pth',
            prefix='backbone',
        ),
    ),
    neck=None,  # the backbone pools
    head=dict(in_channels=768),
)
