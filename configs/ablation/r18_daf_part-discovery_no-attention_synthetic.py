# Control for the dual attention with part discovery: the same model whose
# teacher sees the image only (no heatmap or saliency channels, no part
# attention filter), so the discovered parts reach it in no way.
_base_ = ['../daf_r18_part-discovery_synthetic.py']

model = dict(teacher=dict(attention=False, neck=dict(use_attention=False)))
