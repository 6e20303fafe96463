# The synthetic set's dataloaders for the oracle controls only
# (model.part_pool.boxes or model.teacher.mask_boxes = 'ground_truth'): each
# sample also carries its true parts as gt_bboxes, flipped with the image by
# RandomFlip. The parts are 12 px squares centred on the beak, eye, wing and
# tail regions (parts/parts.txt ids 1, 3, 4, 5) of parts/part_boxes.txt. The
# crown is left out, and so are the regions' own extents: both follow the
# crest shape, a class attribute, while those four parts sit at the same
# relative places in every class. A config that inherits this file, after its
# synthetic_fgvc dataset base, sets:
#   train_dataloader = dict(dataset={{_base_.part_box_train_dataset}})
#   val_dataloader = dict(dataset={{_base_.part_box_test_dataset}})
#   test_dataloader = val_dataloader
_part_box_pack = dict(type='PackInputs', algorithm_keys=('gt_bboxes', ))
_part_boxes = dict(with_part_boxes=True, part_ids=[1, 3, 4, 5], part_box_size=12)
part_box_train_dataset = dict(
    **_part_boxes,
    pipeline=[
        dict(type='LoadImageFromFileSafe', skip_corrupt=False),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        _part_box_pack,
    ])
part_box_test_dataset = dict(
    **_part_boxes,
    pipeline=[
        dict(type='LoadImageFromFileSafe', skip_corrupt=False),
        _part_box_pack,
    ])
