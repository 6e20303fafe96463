# Small twin of r50_sppn_cub.py: ResNet-18 student with SPPN, no heatmap.
_base_ = ['../daf_r18_synthetic.py']

model = dict(location_heatmap=None, teacher=None, distill=None, fusion_head=None,
             # Without a teacher the parts reach the prediction only this way:
             # the mean of the full-image logits and the top-3 part images'
             # logits (NTS-Net's combination of the image and its parts).
             predict_part_top_m=3)
