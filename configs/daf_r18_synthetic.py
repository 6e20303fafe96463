# The complete DAF-net, ResNet-18, on the synthetic set: what `make demo` trains.
_base_ = [
    './_base_/models/daf_r18_synthetic.py',
    './_base_/datasets/synthetic_fgvc.py',
    './_base_/schedules/synthetic_sgd.py',
    './_base_/default_runtime.py',
]

default_hooks = dict(logger=dict(interval=10))
