# OV-COCO schedule (spec §8.4): AdamW 1e-4, wd 0.1, clip 1.0, 250-iteration linear warm-up, 3 epochs
# (the reference's step at epoch 100 never fires), fp16 with static loss scale 512 (on a machine
# without CUDA tools/train.py turns AmpOptimWrapper into bf16 autocast), batch 8 x 8 GPUs.
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale=512.0,
                     optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
                     clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=3, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# CLIPSelf's config enables it: lr x (total batch / 64) when not trained with 8 GPUs x 8 images
# (switch: auto_scale_lr.enable=False keeps lr 1e-4 whatever the batch)
auto_scale_lr = dict(enable=True, base_batch_size=64)
