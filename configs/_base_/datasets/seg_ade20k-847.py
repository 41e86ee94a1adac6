# ADE20K-full, 847 classes (densevlm_mm.ADE20K847Dataset): open-vocabulary evaluation.
# Layout (the detectron2 files of the SAN / CAT-Seg preparation script prepare_ade20k_full.py):
#   data/ADE20K_2021_17_01/images_detectron2/validation/*.jpg
#   data/ADE20K_2021_17_01/annotations_detectron2/validation/*.tif   (uint16, 0..846, 65535 = ignore)
# Labels above 255 need LoadWideSegAnnotations and IoUMetric(ignore_index=65535).
custom_imports = dict(imports=['densevlm_mm.datasets.seg_datasets'], allow_failed_imports=False)
dataset_type = 'densevlm_mm.ADE20K847Dataset'
data_root = 'data/ADE20K_2021_17_01'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=640, max_size=2560),
    dict(type='densevlm_mm.LoadWideSegAnnotations', num_classes=847),
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
        data_prefix=dict(img_path='images_detectron2/validation',
                         seg_map_path='annotations_detectron2/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'], ignore_index=65535)
test_evaluator = val_evaluator
