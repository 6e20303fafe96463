# The complete DAF-net on Stanford Cars (196 classes) at 448. N=4 parts per car
# (our choice, the paper gives N only for birds: grille/lights, wheels, roof line
# and rear each carry the make and year).
_base_ = [
    './_base_/models/daf_r50.py',
    './_base_/datasets/stanford_cars.py',
    './_base_/schedules/fgvc_sgd_100e.py',
    './_base_/default_runtime.py',
]

model = dict(
    head=dict(num_classes=196),
    teacher=dict(head=dict(num_classes=196)),
    fusion_head=dict(num_classes=196),
)
