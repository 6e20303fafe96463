# Oracle control for the student's pooled part cross entropy (model.part_pool):
# the + SPPN + LHM row pooling the last stage at every ground-truth part
# region of the image (all five, in training and in the prediction) instead of
# its top-3 proposals: about the most that choosing the boxes could give this
# row. Only for the synthetic set, whose parts/part_boxes.txt gives the
# regions; the data samples carry them as gt_bboxes (flipped with the image).
_base_ = ['./r18_sppn_lhm_synthetic.py']

model = dict(part_pool=dict(boxes='ground_truth'))

_pack_with_part_boxes = dict(type='PackInputs', algorithm_keys=('gt_bboxes', ))
train_dataloader = dict(
    dataset=dict(
        with_part_boxes=True,
        pipeline=[
            dict(type='LoadImageFromFileSafe', skip_corrupt=False),
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            _pack_with_part_boxes,
        ]))
val_dataloader = dict(
    dataset=dict(
        with_part_boxes=True,
        pipeline=[
            dict(type='LoadImageFromFileSafe', skip_corrupt=False),
            _pack_with_part_boxes,
        ]))
test_dataloader = val_dataloader
