# A short schedule for the synthetic set on CPU (minutes, not hours): momentum
# SGD as in the paper, 10 epochs from the generic pretrained weights; gradient
# clipping because the ranking loss acts on unbounded SPPN scores.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0))

param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True, T_max=10, eta_min=1e-4)

train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=10)
val_cfg = dict()
test_cfg = dict()
