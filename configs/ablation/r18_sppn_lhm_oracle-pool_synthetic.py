# Oracle control for the student's pooled part cross entropy (model.part_pool):
# the + SPPN + LHM row pooling the last stage at the true parts of each image
# (in training and in the prediction) instead of its top-3 proposals: about
# the most that choosing the boxes could give this row. Each part is a 12 px
# square centred on its region, and the crown is left out: a region's extent
# and the crown's position follow the crest shape, a class attribute, while
# the beak, eye, wing and tail sit where they sit in every class. Only for the
# synthetic set, whose parts/part_boxes.txt gives the regions; the data
# samples carry the squares as gt_bboxes (flipped with the image).
_base_ = ['./r18_sppn_lhm_synthetic.py', '../_base_/datasets/synthetic_fgvc_part_boxes.py']

model = dict(part_pool=dict(boxes='ground_truth'))

# beak, eye, wing, tail (parts/parts.txt ids)
oracle_part_ids = [1, 3, 4, 5]
train_dataloader = dict(
    dataset=dict(with_part_boxes=True, part_ids=oracle_part_ids, part_box_size=12,
                 pipeline={{_base_.part_box_train_pipeline}}))
val_dataloader = dict(
    dataset=dict(with_part_boxes=True, part_ids=oracle_part_ids, part_box_size=12,
                 pipeline={{_base_.part_box_test_pipeline}}))
test_dataloader = val_dataloader
