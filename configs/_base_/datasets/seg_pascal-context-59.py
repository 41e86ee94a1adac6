# PASCAL-Context-59 validation (mmseg's PascalContextDataset59, reduce_zero_label): open-vocabulary
# evaluation. Layout (mmseg's tools/dataset_converters/pascal_context.py):
#   data/VOCdevkit/VOC2010/JPEGImages/*.jpg
#   data/VOCdevkit/VOC2010/SegmentationClassContext/*.png      (0 = ignore, 1..59)
#   data/VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt
dataset_type = 'PascalContextDataset59'
data_root = 'data/VOCdevkit/VOC2010/'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=640, max_size=2560),
    # mmseg's LoadAnnotations + checks: one channel, the image's size, labels 0..58 or 255
    dict(type='densevlm_mm.LoadCheckedSegAnnotations', num_classes=59),
    dict(type='PackSegInputs')
]
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
        ann_file='ImageSets/SegmentationContext/val.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
