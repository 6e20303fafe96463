# The complete DAF-net, ResNet-18, on the synthetic set: what `make demo` trains.
_base_ = [
    './_base_/models/daf_r18_synthetic.py',
    './_base_/datasets/synthetic_fgvc.py',
    './_base_/schedules/synthetic_sgd.py',
    './_base_/default_runtime.py',
]

default_hooks = dict(logger=dict(interval=10))

# The part losses ramp in over the first 2 epochs, while the student leaves
# chance and the part images' cross entropies start to mean something.
custom_hooks = [
    dict(type='NumClassesCheckHook'),
    dict(type='FiniteLossHook', skip_nonfinite=False),
    dict(type='EffectiveBatchHook'),
    dict(type='PartLossWarmupHook', warmup_epochs=2),
]
