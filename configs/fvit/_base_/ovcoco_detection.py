# OV-COCO (spec §8.3): train on the 48 base classes of COCO 2017 train (novel boxes removed by the
# dataset from the standard instances_train2017.json), test on the 65 classes of val 2017;
# AP50 novel / base / all by mmdet's OVCocoMetric. CLIPSelf's split files load too:
#   --cfg-options train_dataloader.dataset.ann_file=annotations/instances_train2017_seen_2_65_cat.json
# Pipelines at the public F-ViT B/16 OV-COCO size (640); size variants redefine them.
data_root = 'data/coco/'
image_size = 640
ovcoco_split = dict(classes='ovcoco_65_all', base_classes='ovcoco_48_base',
                    novel_classes='ovcoco_17_novel')

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
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
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=8, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='mmdet.AspectRatioBatchSampler'),
    dataset=dict(_scope_='mmdet', type='densevlm_mm.OVCocoDataset', data_root=data_root,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), filter_novel=True,
                 filter_cfg=dict(filter_empty_gt=True, min_size=32), pipeline=train_pipeline,
                 **ovcoco_split))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(_scope_='mmdet', type='densevlm_mm.OVCocoDataset', data_root=data_root,
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), test_mode=True, pipeline=test_pipeline,
                 **ovcoco_split))
test_dataloader = val_dataloader
val_evaluator = dict(type='mmdet.OVCocoMetric', ann_file=data_root +
                     'annotations/instances_val2017.json', metric='bbox', format_only=False)
test_evaluator = val_evaluator
