# The paper's schedule: momentum SGD, lr 0.01, x0.5 after 50 epochs, weight decay
# 1e-4. The paper does not give the epoch count; 100 epochs is our choice.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))

param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[50], gamma=0.5)

train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# lr 0.01 was set for a total batch of 16 (our choice; the paper does not say).
auto_scale_lr = dict(base_batch_size=16)
