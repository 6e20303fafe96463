# Runtime settings shared by every mmdaf config (mmpretrain's layout).
default_scope = 'mmpretrain'

# Registers mmdaf's components when a config is loaded by any OpenMMLab tool.
custom_imports = dict(imports=['mmdaf'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # mmengine's CheckpointHook whose saves a kill cannot leave half-written.
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)

# Stop before training on a num_classes/dataset mismatch; stop on a NaN/Inf loss
# before it reaches the weights (skip_nonfinite=True skips such updates instead);
# log the total batch (processes x batch_size) and the lr in use at the start,
# with a warning when the total batch is not auto_scale_lr.base_batch_size.
custom_hooks = [
    dict(type='NumClassesCheckHook'),
    dict(type='FiniteLossHook', skip_nonfinite=False),
    dict(type='EffectiveBatchHook'),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)

log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
