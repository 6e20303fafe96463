# Pipelines that carry each sample's true part regions (parts/part_boxes.txt of
# the synthetic set) to the model as gt_bboxes, flipped with the image by
# RandomFlip: for the oracle controls only (model.part_pool.boxes or
# model.teacher_mask_boxes = 'ground_truth'). A config that inherits this file
# sets, after its synthetic_fgvc dataset base:
#   train_dataloader = dict(dataset=dict(
#       with_part_boxes=True, pipeline={{_base_.part_box_train_pipeline}}))
# and the same with part_box_test_pipeline for val/test.
_part_box_pack = dict(type='PackInputs', algorithm_keys=('gt_bboxes', ))
part_box_train_pipeline = [
    dict(type='LoadImageFromFileSafe', skip_corrupt=False),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    _part_box_pack,
]
part_box_test_pipeline = [
    dict(type='LoadImageFromFileSafe', skip_corrupt=False),
    _part_box_pack,
]
