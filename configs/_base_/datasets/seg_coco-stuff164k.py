# COCO-Stuff-164k, 171 classes (mmseg's COCOStuffDataset): the training set of the open-vocabulary
# segmentors (SAN, CAT-Seg) and its own validation set. Layout (mmseg's
# tools/dataset_converters/coco_stuff164k.py writes the *_labelTrainIds.png maps):
#   data/coco_stuff164k/images/{train2017,val2017}/*.jpg
#   data/coco_stuff164k/annotations/{train2017,val2017}/*_labelTrainIds.png   (0..170, 255 = ignore)
# Children set crop_size and override train_pipeline / test_pipeline where their recipe differs.
# LoadCheckedSegAnnotations is mmseg's LoadAnnotations plus checks when a map is loaded: one
# channel, the image's size, labels 0..170 or 255 (check_labels=False: mmseg's behaviour).
dataset_type = 'COCOStuffDataset'
data_root = 'data/coco_stuff164k'
crop_size = (640, 640)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='densevlm_mm.LoadCheckedSegAnnotations', num_classes=171),
    dict(type='RandomChoiceResize', scales=[int(640 * x * 0.1) for x in range(5, 16)],
         resize_type='ResizeShortestEdge', max_size=2560),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=640, max_size=2560),
    dict(type='densevlm_mm.LoadCheckedSegAnnotations', num_classes=171),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/train2017', seg_map_path='annotations/train2017'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
