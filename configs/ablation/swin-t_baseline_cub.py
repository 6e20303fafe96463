# The baseline of daf_swin-t_cub.py: plain Swin-T classifier (mmpretrain's
# ImageNet-1k weights) on CUB-200-2011 at 448, as r50_baseline_cub.py is for
# ResNet-50; same data, schedule and runtime. Window 7 at 448: see
# daf_swin-t_cub.py.
_base_ = ['./r50_baseline_cub.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        arch='tiny',
        img_size=448,
        window_size=7,
        pad_small_map=True,
        drop_path_rate=0.1,  # as daf_swin-t_cub.py
        out_indices=(3, ),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.openmmlab.com/mmclassification/v0/'
            'swin-transformer/swin_tiny_224_b16x64_300e_imagenet_20210616_090925-66df6be6.pth',
            prefix='backbone',
        ),
    ),
    head=dict(in_channels=768),
)
