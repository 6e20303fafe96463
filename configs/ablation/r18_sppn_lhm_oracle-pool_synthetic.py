# Oracle control for the student's pooled part cross entropy (model.part_pool):
# the + SPPN + LHM row pooling the last stage at every ground-truth part
# region of the image (all five, in training and in the prediction) instead of
# its top-3 proposals: about the most that choosing the boxes could give this
# row. Each part is a 12 px square centred on its region: the regions' own
# extents carry the class (the crown's area follows the crest shape). Only for
# the synthetic set, whose parts/part_boxes.txt gives the regions; the data
# samples carry the squares as gt_bboxes (flipped with the image).
_base_ = ['./r18_sppn_lhm_synthetic.py', '../_base_/datasets/synthetic_fgvc_part_boxes.py']

model = dict(part_pool=dict(boxes='ground_truth'))

train_dataloader = dict(
    dataset=dict(with_part_boxes=True, part_box_size=12,
                 pipeline={{_base_.part_box_train_pipeline}}))
val_dataloader = dict(
    dataset=dict(with_part_boxes=True, part_box_size=12,
                 pipeline={{_base_.part_box_test_pipeline}}))
test_dataloader = val_dataloader
