# Toy config for the tests of tools/train.py and tools/test.py: a Linear regression that trains in
# about a second on CPU. Needs `tests/data/toy` on PYTHONPATH (for `toy_modules`).
default_scope = 'densevlm_mm'
custom_imports = dict(imports=['toy_modules'], allow_failed_imports=False)

model = dict(type='ToyLinearModel', in_features=4, out_features=1)

train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ToyRegressionDataset', num_samples=12, in_features=4, seed=0))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ToyRegressionDataset', num_samples=8, in_features=4, seed=1))
test_dataloader = val_dataloader
val_evaluator = dict(type='ToyMAEMetric')
test_evaluator = val_evaluator

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=4, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
# `end` is explicit: without it mmengine sets it to the max_epochs of the first run, and a run
# resumed with a larger train_cfg.max_epochs would keep that (the scheduler state is restored).
param_scheduler = [
    dict(type='MultiStepLR', milestones=[3], gamma=0.1, by_epoch=True, begin=0, end=4)
]
# The lr above is for a total batch of 8; --auto-scale-lr scales it by (num_gpus * 4) / 8.
auto_scale_lr = dict(enable=False, base_batch_size=8)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=-1),
    sampler_seed=dict(type='DistSamplerSeedHook'))

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
log_processor = dict(type='LogProcessor', window_size=1, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
