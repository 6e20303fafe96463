# ConvNeXt twin of daf_r18_synthetic.py: the same complete DAF-net (SPPN,
# heatmap, teacher, fusion, schedule, hooks; plus the gated distillation) with
# ConvNeXt-w32 student and teacher (configs/_base_/models/convnext-w32_fgvc.py:
# 32, 64, 128, 256 channels, those of the half-width ResNet-18, so every
# channel number of daf_r18_synthetic.py stays). Started from the generic
# synthetic pretraining made by
#   python tools/misc/pretrain_synthetic.py \
#       --config configs/pretrain/convnext-w32_synthetic-generic.py
_base_ = ['./daf_r18_synthetic.py']

pretrained = 'checkpoints/convnext-w32_synthetic-generic_64px.pth'

# Last stage at stride 16, as the ResNet-18's: the kernel-2 downsample of
# stage 3 at stride 1 and its depthwise convolutions dilated by 2, on the
# weights learnt at stride 32 (DilatedConvNeXt). At 64 px: C3 8x8 (stride 8),
# C4 and C5 4x4. gap_before_final_norm=False: stage maps, not pooled vectors.
convnext_w32 = dict(type='DilatedConvNeXt',
                    arch=dict(depths=[3, 3, 9, 3], channels=[32, 64, 128, 256]),
                    downsample_strides=(2, 2, 1), dilations=(1, 1, 1, 2),
                    gap_before_final_norm=False, with_cp=False)

model = dict(
    # Pooling and distillation as before the R18 changes: not measured with ConvNeXt.
    part_pool=None,
    distill=dict(_delete_=True, type='DAFDistiller', student_channels=128,
                 teacher_channels=128, gate='teacher_correct'),
    # C3, C4, C5 = stages 1, 2, 3: 64, 128, 256 channels as the ResNet-18's.
    backbone=dict(
        _delete_=True,
        type='NonReentrantCPBackbone',
        backbone=dict(**convnext_w32, out_indices=(1, 2, 3)),
        # norm1 normalises C3, which only feeds the heatmap (no gradient) and
        # the SPPN, detached here (sppn_detach_input): no gradient reaches it
        # (DDP refuses that), so it is frozen at LayerNorm's 1 and 0.
        frozen_modules=('norm1', ),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone')),
    teacher=dict(
        # 5 input channels: the stem convolution (downsample_layers.0.0) is
        # widened, channels 3-4 start at zero. Outputs C4 (hint) and C5 (neck).
        backbone=dict(
            _delete_=True,
            type='ExpandedInputBackbone',
            in_channels=5,
            backbone=dict(**convnext_w32, out_indices=(2, 3)),
            # norm2 (C4) only feeds the hint, detached on the teacher side.
            frozen_modules=('norm2', ),
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone')),
    ),
)
