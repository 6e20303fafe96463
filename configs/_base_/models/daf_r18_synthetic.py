# DAF-net with ResNet-18 student and teacher, sized for the 128 px synthetic set
# (trained from scratch). Parts there are about 10-25 px, so the SPPN anchors are
# smaller than the 448 defaults: 16-90 px.
_base_ = ['./daf_r50.py']

model = dict(
    backbone=dict(depth=18, init_cfg=None),
    head=dict(num_classes=10, in_channels=512),
    sppn_neck=dict(in_channels=[128, 256, 512], out_channels=64),
    sppn_head=dict(
        in_channels=64,
        feat_channels=64,
        anchor_generator=dict(
            type='AnchorGenerator',
            strides=[8, 16, 32],
            ratios=[0.5, 1.0, 2.0],
            octave_base_scale=2,
            scales_per_octave=2,
            center_offset=0.5),
    ),
    teacher=dict(
        backbone=dict(depth=18, init_cfg=None),
        # Output size 128**2 / 8 = 2048.
        neck=dict(in_channels=512, reduced_channels=128, num_groups=8),
        head=dict(num_classes=10, in_channels=2048),
    ),
    distill=dict(student_channels=256, teacher_channels=256),
    fusion_head=dict(num_classes=10),
)
