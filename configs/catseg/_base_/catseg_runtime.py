# Runtime of the CAT-Seg configs: the project's default runtime with mmseg as the default scope
# (the segmentation dataset bases name mmseg's datasets, transforms and IoUMetric without a
# prefix), iteration-based logging and checkpoints (every 5k iterations), and the hooks that give
# / check the evaluation classes.
_base_ = '../../_base_/default_runtime.py'
default_scope = 'mmseg'
custom_hooks = [
    dict(type='densevlm_mm.EvalClassesFromDatasetHook'),
    dict(type='densevlm_mm.EvalClassCheckHook'),
]
log_processor = dict(by_epoch=False)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=3))
