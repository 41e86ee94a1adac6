# ADE20K-150 validation (mmseg's ADE20KDataset, reduce_zero_label): open-vocabulary evaluation.
# Layout (the ADEChallengeData2016 release):
#   data/ade/ADEChallengeData2016/images/validation/*.jpg
#   data/ade/ADEChallengeData2016/annotations/validation/*.png     (0 = ignore, 1..150)
# Test protocol of SAN / CAT-Seg: shorter side 640.
dataset_type = 'ADE20KDataset'
data_root = 'data/ade/ADEChallengeData2016'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=640, max_size=2560),
    # mmseg's LoadAnnotations + checks: one channel, the image's size, labels 0..149 or 255
    dict(type='densevlm_mm.LoadCheckedSegAnnotations', num_classes=150),
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
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
