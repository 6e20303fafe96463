# Oracle control for the student's pooled part cross entropy (model.part_pool):
# the + SPPN + LHM row pooling the last stage at every ground-truth part
# region of the image (all five, in training and in the prediction) instead of
# its top-3 proposals: about the most that choosing the boxes could give this
# row. Only for the synthetic set, whose parts/part_boxes.txt gives the
# regions; the data samples carry them as gt_bboxes (flipped with the image).
_base_ = ['./r18_sppn_lhm_synthetic.py', '../_base_/datasets/synthetic_fgvc_part_boxes.py']

model = dict(part_pool=dict(boxes='ground_truth'))

train_dataloader = dict(
    dataset=dict(with_part_boxes=True, pipeline={{_base_.part_box_train_pipeline}}))
val_dataloader = dict(
    dataset=dict(with_part_boxes=True, pipeline={{_base_.part_box_test_pipeline}}))
test_dataloader = val_dataloader
