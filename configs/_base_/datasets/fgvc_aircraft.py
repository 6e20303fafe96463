# FGVC-Aircraft (variant level, 100 classes) at 448x448 (resize 512, crop 448),
# read by mmpretrain's FGVCAircraft dataset. Expected layout under data_root:
#   data/images/, data/variants.txt, data/images_variant_{train,val,trainval,test}.txt
_base_ = ['./cub.py']

dataset_type = 'FGVCAircraft'
data_root = 'data/fgvc_aircraft'

data_preprocessor = dict(num_classes=100)

train_dataloader = dict(
    dataset=dict(type=dataset_type, data_root=data_root, split='trainval'))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = val_dataloader
