# The embedded synthetic fine-grained set, written in the CUB_200_2011 layout by
#   python tools/misc/make_synthetic_fgvc.py --out data/synthetic_fgvc \
#       --num-classes 10 --train-per-class 100 --test-per-class 20 --img-size 64 \
#       --part-scale 1.6
# (what `make demo` runs) and read by SyntheticFGVC (mmpretrain's CUB with the
# class names of the root's classes.txt). Images are used at their generated
# size (square), so there is no resize or crop.
dataset_type = 'SyntheticFGVC'
data_root = 'data/synthetic_fgvc'

data_preprocessor = dict(
    num_classes=10,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
)

train_pipeline = [
    # skip_corrupt=True: undecodable images are skipped (logged, counted)
    # instead of stopping training; test pipelines keep False.
    dict(type='LoadImageFromFileSafe', skip_corrupt=False),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='LoadImageFromFileSafe', skip_corrupt=False),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)

val_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type, data_root=data_root, split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
# Fused top-1 as accuracy/top1; student and teacher top-1 follow (DAF models).
val_evaluator = [dict(type='Accuracy', topk=(1, )), dict(type='StreamAccuracy')]

test_dataloader = val_dataloader
test_evaluator = val_evaluator
