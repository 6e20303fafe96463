# Stanford Cars at 448x448 (resize 512, crop 448), read by mmpretrain's
# StanfordCars dataset. Expected layout under data_root, either
#   car_ims/ and cars_annos.mat
# or
#   cars_train/, cars_test/, devkit/cars_meta.mat, devkit/cars_train_annos.mat,
#   devkit/cars_test_annos_withlabels.mat
_base_ = ['./cub.py']

dataset_type = 'StanfordCars'
data_root = 'data/stanfordcars'

data_preprocessor = dict(num_classes=196)

train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = val_dataloader
