# CUB-200-2011 at 448x448: resize to 512 then crop 448.
# Expected layout under data_root: images/, images.txt, image_class_labels.txt,
# train_test_split.txt, classes.txt (mmpretrain's CUB dataset).
dataset_type = 'CUB'
data_root = 'data/CUB_200_2011'

data_preprocessor = dict(
    num_classes=200,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
)

train_pipeline = [
    # skip_corrupt=True: undecodable images are skipped (logged, counted)
    # instead of stopping training; test pipelines keep False.
    dict(type='LoadImageFromFileSafe', skip_corrupt=False),
    dict(type='Resize', scale=512),
    dict(type='RandomCrop', crop_size=448),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='LoadImageFromFileSafe', skip_corrupt=False),
    dict(type='Resize', scale=512),
    dict(type='CenterCrop', crop_size=448),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    dataset=dict(
        type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)

val_dataloader = dict(
    batch_size=8,
    num_workers=4,
    dataset=dict(
        type=dataset_type, data_root=data_root, split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
# Fused top-1 as accuracy/top1; student and teacher top-1 follow (DAF models).
val_evaluator = [dict(type='Accuracy', topk=(1, )), dict(type='StreamAccuracy')]

test_dataloader = val_dataloader
test_evaluator = val_evaluator
