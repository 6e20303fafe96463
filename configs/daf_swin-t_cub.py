# The complete DAF-net of daf_r50_cub.py with Swin-T student and teacher
# (mmpretrain's ImageNet-1k weights) on CUB-200-2011 at 448. Only the backbones
# and the channel numbers that follow from them change; everything else
# (SPPN, heatmap, PAF neck, distillation, fusion, schedule) is daf_r50_cub.py's.
# The schedule is the paper's ResNet one (SGD, lr 0.01), not tuned for Swin.
_base_ = ['./daf_r50_cub.py']

pretrained = ('https://download.openmmlab.com/mmclassification/v0/swin-transformer/'
              'swin_tiny_224_b16x64_300e_imagenet_20210616_090925-66df6be6.pth')

# Swin-T at 448 with patch 4: stages of 112, 56, 28, 14 tokens a side and
# 96, 192, 384, 768 channels (stage i outputs before its patch merging, at
# strides 4, 8, 16, 32). Window 7 (the checkpoint's: its relative position
# tables are per window, not per image size) divides 112/56/28/14, so nothing
# is padded and every other block shifts its windows, as in pretraining.
# pad_small_map=True changes nothing at 448; it lets smaller inputs run (at
# 64 px the maps are 16/8/4/2, below the window: padded to 7 instead of
# mmpretrain's assertion). img_size only sizes the absolute position
# embedding, which Swin-T does not use. drop_path_rate 0.1: untuned (0.2 in
# mmpretrain's ImageNet training). The ImageNet checkpoint only has the norm of
# stage 3 (norm3); norm1 and norm2 of the other outputs start at 1 and 0.
swin_t = dict(type='SwinTransformer', arch='tiny', img_size=448, window_size=7,
              pad_small_map=True, drop_path_rate=0.1, with_cp=False)

model = dict(
    # Student: C3, C4, C5 = stages 1, 2, 3 (192, 384, 768 channels at strides
    # 8, 16, 32, as ResNet-50's C3..C5), returned as (B, C, h, w) maps.
    # NonReentrantCPBackbone keeps model.backbone.backbone.with_cp=True usable
    # under DDP (the student runs twice per step).
    backbone=dict(
        _delete_=True,
        type='NonReentrantCPBackbone',
        backbone=dict(**swin_t, out_indices=(1, 2, 3)),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone'),
    ),
    head=dict(in_channels=768),
    sppn_neck=dict(in_channels=[192, 384, 768]),
    teacher=dict(
        # 5 input channels: ExpandedInputBackbone widens the patch embedding
        # (patch_embed.projection); channels 3-4 start at zero. Outputs C4
        # (hint) and C5 (neck).
        backbone=dict(
            _delete_=True,
            type='ExpandedInputBackbone',
            in_channels=5,
            backbone=dict(**swin_t, out_indices=(2, 3)),
            # norm2 normalises C4, which only feeds the hint, whose teacher
            # side is detached: no gradient reaches it (DDP refuses that), so
            # it is frozen at LayerNorm's 1 and 0 (not in the checkpoint).
            frozen_modules=('norm2', ),
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone'),
        ),
        # Output size 512**2 / 16 = 16384, as with ResNet-50.
        neck=dict(in_channels=768),
    ),
    # Hint on C4: 384 channels in both nets.
    distill=dict(student_channels=384, teacher_channels=384),
)
