# The complete DAF-net with ResNet-50 student and teacher (paper Fig. 4).
# Ablations switch parts off by setting them to None (see configs/ablation/).
# num_classes appears in the three heads and must match the dataset.
pretrained = ('https://download.openmmlab.com/mmclassification/v0/resnet/'
              'resnet50_8xb32_in1k_20210831-ea4938fc.pth')

model = dict(
    type='DAFClassifier',
    # Student: C3, C4, C5 feed the location heatmap and the FPN. mmpretrain's
    # ResNet with non-reentrant activation checkpointing: the student runs
    # twice per step (images, part images), which DDP refuses with ResNet's
    # reentrant checkpointing when with_cp=True.
    backbone=dict(
        type='NonReentrantCPResNet',
        depth=50,
        out_indices=(1, 2, 3),
        style='pytorch',
        with_cp=False,  # activation checkpointing: less memory, recomputes in backward
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone'),
    ),
    head=dict(
        type='LinearClsHead',
        num_classes=200,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
    ),
    location_heatmap=dict(type='LocationHeatmap'),
    # SPPN width 128 (FPN outputs and both head towers), not mmdet's 256:
    # NTS-Net's navigator, the part proposer the paper builds on, scores its
    # anchors from 128 channels. At 256 the FPN and the two towers cost 0.80
    # of a backbone pass in inference (FLOP infer ratio 1.42 over student +
    # teacher, train ratio 1.15); at 128 they cost 0.22 (infer 1.12, train
    # 1.05). R50 at 448, batch 2, `benchmarks/speed.py --flops-only`:
    # daf_predict 185.5 -> 147.0 GFLOP against 2 x 65.4 for the backbones.
    # The three levels (the paper) and the 48-272 px part anchors on them
    # (SPPNHead's default) stay: a single stride-8 level (FinestLevelFPN, as
    # in the synthetic configs) with the same anchor sizes saves only 0.02
    # more, since P3 holds most of the FPN and head FLOPs, and would put all
    # 18 anchor shapes on the stride-8 grid (2.3x the anchors). On the
    # synthetic validation set the same halving (64 -> 32) kept top-1 and the
    # hit rate within one spread over 6 seeds (66.4 vs 67.4, hit 47.4 vs 45.0;
    # docs/benchmarks_history.md, "The SPPN's width on the synthetic set").
    sppn_neck=dict(
        _scope_='mmdet',
        type='FPN',
        in_channels=[512, 1024, 2048],
        out_channels=128,
        num_outs=3,
    ),
    sppn_head=dict(
        _scope_='mmdet',
        type='SPPNHead',
        in_channels=128,
        feat_channels=128,
        num_parts=4,  # N: parts per object (paper: 4 for birds)
        nms_iou_thr=0.25,
        loss_rank=dict(type='PartRankingLoss', margin=1.0, loss_weight=1.0),
        loss_overlap=dict(type='PartOverlapLoss', alpha=1.0, loss_weight=1.0),
        loss_area=dict(type='PartAreaLoss', loss_weight=1.0),
    ),
    # The paper's ranking target: each proposal's part image's cross entropy.
    rank_target=dict(type='PartImageRankTarget'),
    part_images=dict(blur_sigma_ratio=1 / 50, noise_std=1.0, scale=1.0),
    loss_concentrate=dict(type='ConcentrateLoss', top_m=3, loss_weight=1.0),
    teacher=dict(
        # 5 input channels: image, location heatmap, box saliency mask. The two
        # extra channels of conv1 start at zero when loading ImageNet weights.
        backbone=dict(
            type='ExpandedInputResNet',
            depth=50,
            in_channels=5,
            out_indices=(2, 3),
            style='pytorch',
            with_cp=False,
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone'),
        ),
        # Output size reduced_channels**2 / num_groups = 512**2 / 16 = 16384.
        # output_scale=16: the unit-norm bilinear vector times 16, so that the
        # linear head's logits can grow at the usual learning rate (with 1 the
        # synthetic teacher stayed at chance; docs/benchmarks.md).
        neck=dict(type='PAFBilinearNeck', in_channels=2048, reduced_channels=512,
                  num_groups=16, output_scale=16.0),
        head=dict(
            type='LinearClsHead',
            num_classes=200,
            in_channels=16384,
            loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
            topk=(1, ),
        ),
    ),
    # Hint on C4 (1024 channels in both nets), soft targets at T=4.
    distill=dict(
        type='DAFDistiller',
        gate='all',
        student_channels=1024,
        teacher_channels=1024,
        loss_hint=dict(type='HintLoss', loss_weight=1.0),
        loss_soft=dict(type='SoftTargetLoss', temperature=4.0, loss_weight=1.0),
    ),
    fusion_head=dict(type='ClassScoreFusionHead', num_classes=200),
    loss_weights=dict(student=1.0, teacher=1.0, fusion=1.0),
)
