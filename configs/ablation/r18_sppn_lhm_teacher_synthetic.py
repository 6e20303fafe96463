# Small twin of r50_sppn_lhm_teacher_cub.py: no distillation.
_base_ = ['../daf_r18_synthetic.py']

model = dict(distill=None)
