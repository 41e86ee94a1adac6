# CAT-Seg's published recipe (CVPR'24 configs): 80k iterations at batch 4, AdamW lr 2e-4,
# weight decay 1e-4, CLIP lr x 0.01, full-model gradient clipping at L2 norm 0.01, cosine
# decay (the published WarmupCosineLR runs with WARMUP_ITERS=0), evaluation every 5k iterations.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(custom_keys={
        'backbone': dict(lr_mult=0.01),
        'text_encoder': dict(lr_mult=0.01),
    }),
    constructor='densevlm_mm.FrozenAwareOptimWrapperConstructor')
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=80000, eta_min=0.0, by_epoch=False, begin=0, end=80000)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=5000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=4)
