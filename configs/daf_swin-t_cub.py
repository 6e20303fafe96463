# The complete DAF-net of daf_r50_cub.py with Swin-T student and teacher
# (mmpretrain's ImageNet-1k weights) on CUB-200-2011 at 448: daf_convnext-t_cub.py
# with the inner backbones (and their checkpoint) swapped. Swin-T has
# ConvNeXt-T's stage channels (96, 192, 384, 768 at strides 4, 8, 16, 32), so
# the wrappers, the channel numbers and everything else carry over.
# The schedule is the paper's ResNet one (SGD, lr 0.01), not tuned for Swin.
_base_ = ['./daf_convnext-t_cub.py']

pretrained = ('https://download.openmmlab.com/mmclassification/v0/swin-transformer/'
              'swin_tiny_224_b16x64_300e_imagenet_20210616_090925-66df6be6.pth')

# Swin-T at 448 with patch 4: stages of 112, 56, 28, 14 tokens a side. Window 7
# (the checkpoint's: its relative position tables are per window, not per
# image size) divides 112/56/28/14, so nothing is padded and every other
# block shifts its windows, as in pretraining. pad_small_map=True changes
# nothing at 448; it lets smaller inputs run (at 64 px the maps are
# 16/8/4/2, below the window: padded to 7 instead of mmpretrain's
# assertion). img_size only sizes the absolute position embedding, which
# Swin-T does not use. drop_path_rate 0.1: untuned (0.2 in mmpretrain's
# ImageNet training). As with ConvNeXt, the checkpoint only has the norm of
# stage 3 (norm3); the teacher's norm2 stays frozen (see the base).
swin_t = dict(type='SwinTransformer', arch='tiny', img_size=448, window_size=7,
              pad_small_map=True, drop_path_rate=0.1, with_cp=False)

model = dict(
    backbone=dict(
        backbone=dict(_delete_=True, **swin_t, out_indices=(1, 2, 3)),
        init_cfg=dict(checkpoint=pretrained),
    ),
    teacher=dict(
        # ExpandedInputBackbone widens the patch embedding
        # (patch_embed.projection) to 5 channels; channels 3-4 start at zero.
        backbone=dict(
            backbone=dict(_delete_=True, **swin_t, out_indices=(2, 3)),
            init_cfg=dict(checkpoint=pretrained),
        ),
    ),
)
