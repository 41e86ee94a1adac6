# The embedded default's segmentation stage: a tiny CAT-Seg on CPU on generated images.
# Tiny random-initialised open_clip towers (bundled config densevlm-tiny-eva02, the align stage's
# student family; densevlm-tiny-vit works the same), 96x96 images of 6 classes written by
# densevlm_mm.datasets.synthetic_segmentation.make_synthetic_segmentation(`seg_root`).
# `make demo` (tools/demo_stages/segment.py) writes the data and drops the aligned student in:
#   model.backbone.pretrained=<align work dir>/train/epoch_N.pth
# By hand:
#   python -c "from densevlm_mm.datasets.synthetic_segmentation import \
#       make_synthetic_segmentation as m; m('work_dirs/tiny_demo/seg_data')"
#   python tools/train.py configs/catseg/catseg_tiny_demo.py
_base_ = [
    './_base_/catseg_runtime.py',
]
custom_imports = dict(
    imports=['densevlm_mm.models.segmentors', 'densevlm_mm.datasets.synthetic_segmentation'],
    allow_failed_imports=False)
demo_root = 'work_dirs/tiny_demo'
seg_root = f'{demo_root}/seg_data'
# the classes of make_synthetic_segmentation(num_classes=6), label id = index
classes = ['sky', 'car', 'grass', 'person', 'road', 'dog']
clip_model = 'densevlm-tiny-eva02'
image_size = 96
model = dict(
    type='densevlm_mm.CATSeg',
    data_preprocessor=dict(
        type='mmseg.SegDataPreProcessor',
        mean=[122.7709383, 116.7460125, 104.09373615],
        std=[68.5005327, 66.6321579, 70.32316305],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(image_size, image_size)),
    backbone=dict(type='DenseVLMBackbone', model_name=clip_model, pretrained=None,
                  out_indices=(0, 1), with_dense=True),
    text_encoder=dict(type='CATSegTextEncoder', model_name=clip_model, pretrained=None,
                      templates='catseg-single'),
    # 6x6 CLIP grid: window 3 (the second Swin block shifts by 1), class pooling 2x2 -> 3x3,
    # classes padded to 8 tokens
    decode_head=dict(type='CATSegHead', hidden_dim=32, appearance_guidance_dim=16,
                     text_guidance_dim=16, num_layers=2, num_heads=2, window_size=3,
                     pooling_size=(2, 2), pad_len=8, clip_upsample_dims=(32, 16),
                     decoder_dims=(16, 8), decoder_guidance_dims=(8, 4)),
    train_classes=classes,
    test_classes='from_dataset',
    finetune='qv',
    clip_resolution=(image_size, image_size),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='densevlm_mm.SyntheticSegDataset', data_root=seg_root,
                 data_prefix=dict(img_path='images/train', seg_map_path='annotations/train'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='densevlm_mm.SyntheticSegDataset', data_root=seg_root,
                 data_prefix=dict(img_path='images/val', seg_map_path='annotations/val'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# CAT-Seg's optimiser (AdamW, CLIP lr x 0.01, full-model grad clip 0.01) at a demo learning rate
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-2, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(custom_keys={
        'backbone': dict(lr_mult=0.01),
        'text_encoder': dict(lr_mult=0.01),
    }),
    constructor='densevlm_mm.FrozenAwareOptimWrapperConstructor')
max_iters = 60
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min=0.0, by_epoch=False, begin=0,
         end=max_iters)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
                     checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                                     max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
auto_scale_lr = dict(enable=False, base_batch_size=4)
randomness = dict(seed=0)
