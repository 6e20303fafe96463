# DAF-net with half-width ResNet-18 student and teacher (32 stem and base
# channels), sized for the synthetic set at 64 px (parts about 12-15 px), and
# started from the generic synthetic pretraining, as the paper starts from
# ImageNet. Why each choice: docs/benchmarks.md#why-the-defaults-are-what-they-are
_base_ = ['./daf_r50.py']

pretrained = 'checkpoints/r18-w32_synthetic-generic_64px.pth'

# Last stage at stride 16: a 2x2 C5 at 64 px is too coarse for the teacher's neck.
last_stage_stride_16 = dict(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2))
r18_w32 = dict(depth=18, stem_channels=32, base_channels=32, **last_stage_stride_16,
               init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone'))

model = dict(
    backbone=r18_w32,
    head=dict(num_classes=10, in_channels=256),
    # P3 alone (stride 8), 32 channels: the part-sized anchors need no coarser level.
    sppn_neck=dict(_delete_=True, _scope_='mmdet', type='FinestLevelFPN',
                   in_channels=[64, 128, 256], out_channels=32),
    sppn_head=dict(
        in_channels=32,
        feat_channels=32,
        # Fixed anchors, scored and ranked (NTS-Net): regressed boxes drifted to the border.
        regress_boxes=False,
        # Part-sized anchors only (10 and 14 px): larger ones won every ranking.
        anchor_generator=dict(type='AnchorGenerator', strides=[8], ratios=[0.5, 1.0, 2.0],
                              octave_base_scale=1.25, scales_per_octave=2,
                              center_offset=0.5),
        # 8 random anchors ranked with the 4 proposals; weight 0.1 for 11x the pairs.
        rank_samples=8,
        loss_rank=dict(type='PartRankingLoss', margin=1.0, loss_weight=0.1),
        # GroupNorm keeps the score tower's ReLUs alive under the noisy target.
        tower_norm_groups=8,
    ),
    # Proposals and samples ranked by 24 px windows: cheaper, one kind of input.
    rank_target=dict(type='WindowRankTarget', crop=24),
    # sigma 3.2 px: the 12-15 px parts are unreadable outside the box.
    part_images=dict(type='PartImageGenerator', blur_sigma_ratio=1 / 20),
    # The SPPN's losses train the SPPN only: into the backbone they cost 7 points.
    sppn_detach_input=True,
    # The part losses would train the head, not the backbone (moot without L_con).
    part_backbone_grad_scale=0.0,
    # No L_con: level without it, and the training step skips the part pass.
    loss_concentrate=None,
    teacher=dict(
        backbone=r18_w32,
        neck=dict(in_channels=256, reduced_channels=128, num_groups=8),
        head=dict(num_classes=10, in_channels=2048),  # 128**2 / 8
    ),
    # Distil only what the teacher gets right: a teacher at chance pulls nowhere.
    distill=dict(student_channels=128, teacher_channels=128, gate='teacher_correct'),
    fusion_head=dict(num_classes=10),
)
