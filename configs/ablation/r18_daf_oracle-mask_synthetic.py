# Oracle control for the teacher's attention inputs: the complete DAF-net whose
# teacher's box mask (saliency channel and part attention filter) is the union
# of the true parts of each image instead of the SPPN's proposals, in training
# and in the prediction (parts: ../_base_/datasets/synthetic_fgvc_part_boxes.py).
# With the control that sees no attention input at all
# (r18_daf_no-attention_synthetic.py) it says whether the teacher gains from
# the box mask when the boxes are right.
_base_ = ['../daf_r18_synthetic.py', '../_base_/datasets/synthetic_fgvc_part_boxes.py']

model = dict(teacher=dict(mask_boxes='ground_truth'))

train_dataloader = dict(dataset={{_base_.part_box_train_dataset}})
val_dataloader = dict(dataset={{_base_.part_box_test_dataset}})
test_dataloader = val_dataloader
