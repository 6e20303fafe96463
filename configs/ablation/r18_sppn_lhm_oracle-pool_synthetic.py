# Oracle control for the student's pooled part cross entropy (model.part_pool):
# the + SPPN + LHM row pooling the last stage at the true parts of each image
# (in training and in the prediction) instead of its top-3 proposals: about
# the most that choosing the boxes could give this row. Which parts, and why
# squares without the crown: ../_base_/datasets/synthetic_fgvc_part_boxes.py.
_base_ = ['./r18_sppn_lhm_synthetic.py', '../_base_/datasets/synthetic_fgvc_part_boxes.py']

model = dict(part_pool=dict(boxes='ground_truth'))

train_dataloader = dict(dataset={{_base_.part_box_train_dataset}})
val_dataloader = dict(dataset={{_base_.part_box_test_dataset}})
test_dataloader = val_dataloader
