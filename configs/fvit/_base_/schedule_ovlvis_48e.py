# OV-LVIS schedule (spec §8.4): as OV-COCO, 48 epochs with x0.1 steps after epochs 32 and 44,
# evaluation every 12 epochs.
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale=512.0,
                     optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
                     clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=48, milestones=[32, 44], gamma=0.1),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=48, val_interval=12)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# CLIPSelf's config enables it: lr x (total batch / 64) when not trained with 8 GPUs x 8 images
# (switch: auto_scale_lr.enable=False keeps lr 1e-4 whatever the batch)
auto_scale_lr = dict(enable=True, base_batch_size=64)
