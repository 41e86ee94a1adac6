# The embedded default: DenseVLM end to end on CPU in a few minutes, with no downloads.
# Tiny random-initialised open_clip models (bundled configs densevlm-tiny-eva02 student and
# densevlm-tiny-eva02-teacher P-VLM) and a generated panoptic image set. `make demo` runs
# tools/run_tiny_demo.py, which creates these files under `demo_root` and trains this config.
_base_ = [
    '../_base_/schedules/adamw_lr1e-5_warmup1k_cosine_6e.py',
    '../_base_/default_runtime.py',
]
demo_root = 'work_dirs/tiny_demo'
image_size = 128
vocabulary = f'{demo_root}/data/vocabulary.json'

model = dict(
    type='DenseVLM',
    data_preprocessor=dict(type='DenseVLMDataPreprocessor'),
    backbone=dict(type='DenseVLMBackbone', model_name='densevlm-tiny-eva02',
                  pretrained=f'{demo_root}/checkpoints/student.pt', unlocked_groups=2),
    target_generator=dict(
        type='RegionRetriever',
        backbone=dict(type='DenseVLMBackbone', model_name='densevlm-tiny-eva02-teacher',
                      pretrained=f'{demo_root}/checkpoints/teacher.pt'),
        text_embeddings=f'{demo_root}/text/teacher_vocabulary.pt',
        vocabulary=vocabulary, tau=0.01, precision='fp32'),
    head=dict(
        type='DenseVLMHead',
        loss=dict(type='DecoupledAlignLoss', mode='densevlm', theta=0.3, reduction='reference'),
        text_embeddings=f'{demo_root}/text/student_vocabulary.pt',
        vocabulary=vocabulary),
    eval_text_embeddings=f'{demo_root}/text/student_vocabulary.pt',
)

train_pipeline = [
    dict(type='LoadImageSafe'),
    dict(type='ResizeLongestPad', size=image_size),
    dict(type='SampleGridRegions', max_split=6, max_regions=36, pairs='paper'),
    dict(type='PackDenseVLMInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=True, drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CocoImageDataset', data_root=f'{demo_root}/data',
                 ann_file='instances.json', data_prefix=dict(img='images/'),
                 pipeline=train_pipeline))
val_pipeline = [
    dict(type='LoadPanopticRegions'),
    dict(type='ResizeLongestPad', size=image_size),
    dict(type='PackDenseVLMInputs'),
]
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CocoPanopticRegionDataset', data_root=f'{demo_root}/data',
                 ann_file='panoptic.json', data_prefix=dict(img='images/', seg='panoptic/'),
                 pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='RegionClassificationMetric')
test_evaluator = val_evaluator

# 32 images / batch 4 = 8 iterations per epoch; 5 epochs = 40 iterations on CPU.
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.98), eps=1e-6,
                                    weight_decay=0.1),
                     paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                                        flat_decay_mult=0.0),
                     constructor='FrozenAwareOptimWrapperConstructor')
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=8),
    dict(type='CosineAfterWarmupLR', warmup_iters=8, eta_min=0.0, by_epoch=True, begin=0,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=5, val_interval=5)
default_hooks = dict(logger=dict(type='LoggerHook', interval=4),
                     checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
custom_hooks = [dict(type='EvalClassCheckHook'), dict(type='SkippedImagesHook')]
log_processor = dict(window_size=4)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
auto_scale_lr = dict(enable=False, base_batch_size=4)
