# Control for the dual attention: the complete DAF-net whose teacher sees the
# image only (heatmap and saliency channels zeros, no part attention filter in
# its neck), with the same score fusion. If this row matches
# the complete model, any second network would do.
_base_ = ['../daf_r18_synthetic.py']

model = dict(teacher=dict(attention=False, neck=dict(use_attention=False)))
