# Control row: the complete R18 synthetic DAF with the paper's distillation
# (hint and soft targets, T = 4), gated to the images whose teacher top-1 is
# right, as daf_r18_synthetic.py shipped it before. On the validation set it
# cost the fused score 3.2 points and the student 0.7 (docs/benchmarks.md,
# "Distillation from a teacher behind the student").
_base_ = ['../daf_r18_synthetic.py']

model = dict(
    distill=dict(_delete_=True, type='DAFDistiller', student_channels=128,
                 teacher_channels=128, gate='teacher_correct'))
