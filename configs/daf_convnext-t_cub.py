# The complete DAF-net of daf_r50_cub.py with ConvNeXt-T student and teacher
# (mmpretrain's ImageNet-1k weights) on CUB-200-2011 at 448. Only the backbones
# and the channel numbers that follow from them change; everything else
# (SPPN, heatmap, PAF neck, distillation, fusion, schedule) is daf_r50_cub.py's.
# The schedule is the paper's ResNet one (SGD, lr 0.01), not tuned for ConvNeXt.
_base_ = ['./daf_r50_cub.py']

pretrained = ('https://download.openmmlab.com/mmclassification/v0/convnext/'
              'convnext-tiny_32xb128_in1k_20221207-998cf3e9.pth')

# ConvNeXt-T stages: 96, 192, 384, 768 channels at strides 4, 8, 16, 32.
# gap_before_final_norm=False: the stages are returned as (B, C, h, w) maps
# (True would pool them to vectors). The ImageNet checkpoint only has the norm
# of stage 3 (norm3); norm1 and norm2 of the other outputs start at 1 and 0.
# drop_path_rate 0.1: mmpretrain's ImageNet ConvNeXt-T value, untuned here.
convnext_t = dict(type='ConvNeXt', arch='tiny', gap_before_final_norm=False,
                  drop_path_rate=0.1, with_cp=False)

model = dict(
    # Student: C3, C4, C5 = stages 1, 2, 3 (192, 384, 768 channels at strides
    # 8, 16, 32, as ResNet-50's C3..C5). NonReentrantCPBackbone keeps
    # model.backbone.backbone.with_cp=True usable under DDP (the student runs
    # twice per step).
    backbone=dict(
        _delete_=True,
        type='NonReentrantCPBackbone',
        backbone=dict(**convnext_t, out_indices=(1, 2, 3)),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone'),
    ),
    head=dict(in_channels=768),
    sppn_neck=dict(in_channels=[192, 384, 768]),
    teacher=dict(
        # 5 input channels: ExpandedInputBackbone widens ConvNeXt's stem
        # convolution (downsample_layers.0.0); channels 3-4 start at zero.
        # Outputs C4 (hint) and C5 (neck).
        backbone=dict(
            _delete_=True,
            type='ExpandedInputBackbone',
            in_channels=5,
            backbone=dict(**convnext_t, out_indices=(2, 3)),
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
