# OV-LVIS (spec §8.3): train on LVIS v1 train without the 337 rare (novel) classes' annotations
# (removed by the dataset), test on LVIS v1 val; mask mAP_r / mAP_c / mAP_f / mAP by mmdet's LVISMetric
# (needs the `lvis` package). CLIPSelf's lvis_v1_train_seen_1203_cat.json loads too.
# Pipelines at the public F-ViT B/16 OV-LVIS size (1024); size variants redefine them.
data_root = 'data/coco/'
image_size = 1024
ovlvis_split = dict(base_classes='ovlvis_866_base', novel_classes='ovlvis_337_novel_rare')

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=(image_size, image_size), ratio_range=(0.1, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=(image_size, image_size),
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=8, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='mmdet.AspectRatioBatchSampler'),
    dataset=dict(_scope_='mmdet', type='densevlm_mm.OVLVISDataset', data_root=data_root,
                 ann_file='annotations/lvis_v1_train.json', data_prefix=dict(img=''),
                 filter_novel=True, filter_cfg=dict(filter_empty_gt=True, min_size=32),
                 pipeline=train_pipeline, **ovlvis_split))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(_scope_='mmdet', type='densevlm_mm.OVLVISDataset', data_root=data_root,
                 ann_file='annotations/lvis_v1_val.json', data_prefix=dict(img=''),
                 test_mode=True, pipeline=test_pipeline, **ovlvis_split))
test_dataloader = val_dataloader
val_evaluator = dict(type='mmdet.LVISMetric', ann_file=data_root + 'annotations/lvis_v1_val.json',
                     metric=['bbox', 'segm'])
test_evaluator = val_evaluator
