# Oracle control for the teacher's attention inputs: the complete DAF-net whose
# teacher sees the union of 12 px squares centred on the true beak, eye, wing
# and tail of each image (saliency channel and part attention filter) instead
# of the union of the SPPN's proposals, in training and in the prediction. No
# crown and no region extents: they follow the crest shape, a class attribute
# (see r18_sppn_lhm_oracle-pool_synthetic.py). With the control that sees no
# attention input at all (r18_daf_no-attention_synthetic.py) it says whether
# the teacher gains from the box mask when the boxes are right. Synthetic set
# only (parts/part_boxes.txt).
_base_ = ['../daf_r18_synthetic.py', '../_base_/datasets/synthetic_fgvc_part_boxes.py']

model = dict(teacher_mask_boxes='ground_truth')

# beak, eye, wing, tail (parts/parts.txt ids)
oracle_part_ids = [1, 3, 4, 5]
train_dataloader = dict(
    dataset=dict(with_part_boxes=True, part_ids=oracle_part_ids, part_box_size=12,
                 pipeline={{_base_.part_box_train_pipeline}}))
val_dataloader = dict(
    dataset=dict(with_part_boxes=True, part_ids=oracle_part_ids, part_box_size=12,
                 pipeline={{_base_.part_box_test_pipeline}}))
test_dataloader = val_dataloader
