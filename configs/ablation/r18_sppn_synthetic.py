# Small twin of r50_sppn_cub.py: ResNet-18 student with SPPN, no heatmap.
_base_ = ['../daf_r18_synthetic.py']

model = dict(location_heatmap=None, teacher=None, distill=None, fusion_head=None)
