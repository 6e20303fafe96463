# Small twin of r50_sppn_lhm_cub.py: the ResNet-18 student net.
_base_ = ['../daf_r18_synthetic.py']

model = dict(teacher=None, distill=None, fusion_head=None,
             # Without a teacher the parts reach the prediction only this way:
             # the mean of the full-image logits and the top-3 part images'
             # logits (NTS-Net's combination of the image and its parts).
             predict_part_top_m=3)
