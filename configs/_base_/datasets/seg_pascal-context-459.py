# PASCAL-Context full, 459 classes (densevlm_mm.PascalContext459Dataset): open-vocabulary evaluation.
# Layout (the detectron2 files of CAT-Seg's prepare_pascal_context_459.py; labels.txt of the
# PASCAL-Context full release, 459 lines "<id>: <name>", gives the class names):
#   data/VOCdevkit/VOC2010/JPEGImages/*.jpg
#   data/VOCdevkit/VOC2010/annotations_detectron2/pc459_val/*.tif   (uint16, 0..458, 65535 = ignore)
#   data/VOCdevkit/VOC2010/labels.txt
# The samples are the annotated ones (listed from the annotation folder).
custom_imports = dict(imports=['densevlm_mm.datasets.seg_datasets'], allow_failed_imports=False)
dataset_type = 'densevlm_mm.PascalContext459Dataset'
data_root = 'data/VOCdevkit/VOC2010/'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=640, max_size=2560),
    dict(type='densevlm_mm.LoadWideSegAnnotations', num_classes=459),
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
        class_file='labels.txt',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='annotations_detectron2/pc459_val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'], ignore_index=65535)
test_evaluator = val_evaluator
