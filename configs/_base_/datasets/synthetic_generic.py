# The generic synthetic set used for pretraining (the role ImageNet plays for
# CUB): 12 classes = body-hue family x facing, fine-grained part attributes
# random in every image. Written by
#   python tools/misc/make_synthetic_fgvc.py --generic --out data/synthetic_generic \
#       --train-per-class 150 --test-per-class 10 --img-size 64 --part-scale 1.6 --seed 1000
# (tools/misc/pretrain_synthetic.py runs it when the folder is missing).
_base_ = ['./synthetic_fgvc.py']

data_root = 'data/synthetic_generic'
data_preprocessor = dict(num_classes=12)

train_dataloader = dict(batch_size=32, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = [dict(type='Accuracy', topk=(1, ))]
test_evaluator = val_evaluator
