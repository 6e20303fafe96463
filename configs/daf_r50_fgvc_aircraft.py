# The complete DAF-net on FGVC-Aircraft (100 variants) at 448. N=3 parts per
# aircraft (our choice, the paper gives N only for birds: nose/cockpit, engines
# and wings, tail fin), M=3.
_base_ = [
    './_base_/models/daf_r50.py',
    './_base_/datasets/fgvc_aircraft.py',
    './_base_/schedules/fgvc_sgd_100e.py',
    './_base_/default_runtime.py',
]

model = dict(
    head=dict(num_classes=100),
    sppn_head=dict(num_parts=3),
    teacher=dict(head=dict(num_classes=100)),
    fusion_head=dict(num_classes=100),
)
