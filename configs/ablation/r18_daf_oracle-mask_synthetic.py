# Oracle control for the teacher's attention inputs: the complete DAF-net whose
# teacher sees the union of 12 px squares centred on the five true part regions
# of each image (squares: a region's own extent carries the class; saliency
# channel and part attention filter) instead of the union of the SPPN's
# proposals, in training and in the prediction. With the control that sees no
# attention input at all (r18_daf_no-attention_synthetic.py) it says whether
# the teacher gains from the box mask when the boxes are right. Synthetic set
# only (parts/part_boxes.txt).
_base_ = ['../daf_r18_synthetic.py', '../_base_/datasets/synthetic_fgvc_part_boxes.py']

model = dict(teacher_mask_boxes='ground_truth')

train_dataloader = dict(
    dataset=dict(with_part_boxes=True, part_box_size=12,
                 pipeline={{_base_.part_box_train_pipeline}}))
val_dataloader = dict(
    dataset=dict(with_part_boxes=True, part_box_size=12,
                 pipeline={{_base_.part_box_test_pipeline}}))
test_dataloader = val_dataloader
