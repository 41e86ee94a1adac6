# The reference run's schedule (spec §5.1/§5.3): AdamW betas (0.9, 0.98) (paper Table 9; the
# reference code silently used 0.999 for EVA models, spec §10.7), weight decay 0.1 except norms,
# biases and 1-D parameters, lr 1e-5, 1000 linear warm-up iterations then cosine to 0, 6 epochs,
# AMP. The base batch for --auto-scale-lr is 16: the reference's effective single-replica batch.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
    constructor='FrozenAwareOptimWrapperConstructor',
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1000),
    # no `end`: the cosine ends with training (mmengine fills in train_cfg.max_epochs)
    dict(type='CosineAfterWarmupLR', warmup_iters=1000, eta_min=0.0, by_epoch=True, begin=0,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=6, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=16)
