# The complete DAF-net, ResNet-18, on the synthetic set: what `make demo` trains.
_base_ = [
    './_base_/models/daf_r18_synthetic.py',
    './_base_/datasets/synthetic_fgvc.py',
    './_base_/schedules/synthetic_sgd.py',
    './_base_/default_runtime.py',
]

# Why each choice: docs/benchmarks.md#why-the-defaults-are-what-they-are
# The head also classifies C5 pooled over the heatmap's object mask (69.4 vs 68.0);
# no distillation: its teacher lags the student (72.8 vs 69.6, control row daf_distill).
model = dict(part_pool=dict(type='PooledPartHead', boxes='object'), distill=None)

default_hooks = dict(logger=dict(interval=10))

# The SPPN's losses ramp in over 2 epochs, while the student leaves chance.
custom_hooks = [
    dict(type='NumClassesCheckHook'),
    dict(type='FiniteLossHook', skip_nonfinite=False),
    dict(type='EffectiveBatchHook'),
    dict(type='PartLossWarmupHook', warmup_epochs=2),
]
