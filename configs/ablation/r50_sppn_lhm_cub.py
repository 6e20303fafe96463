# Paper Table 3, row 3: ResNet-50 + SPPN + location heatmap (the student net).
_base_ = [
    '../_base_/models/daf_r50.py',
    '../_base_/datasets/cub.py',
    '../_base_/schedules/fgvc_sgd_100e.py',
    '../_base_/default_runtime.py',
]

model = dict(teacher=None, distill=None, fusion_head=None,
             # Without a teacher the parts reach the prediction only this way:
             # the mean of the full-image logits and the top-3 part images'
             # logits (NTS-Net's combination of the image and its parts).
             predict_part_top_m=3)
