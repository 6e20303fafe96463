# Small twin of r50_sppn_lhm_cub.py: the ResNet-18 student net.
_base_ = ['../daf_r18_synthetic.py']

model = dict(teacher=None, distill=None, fusion_head=None)
