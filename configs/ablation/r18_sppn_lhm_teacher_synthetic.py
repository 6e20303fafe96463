# Small twin of r50_sppn_lhm_teacher_cub.py: no distillation. The shipped
# daf_r18_synthetic.py has none either (measured on the validation set), so
# on the synthetic set this row and the complete DAF are the same model; the
# row stays so that the table keeps the paper's rows.
_base_ = ['../daf_r18_synthetic.py']

model = dict(distill=None)
