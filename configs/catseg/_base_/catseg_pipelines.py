# CAT-Seg data recipe: train on 384x384 crops of images whose shorter side is 384 (colour jitter,
# flips); test on the image resized to 640x640, slid in 384 windows (stride 256) plus a global view
# (the model's test_cfg), predictions resized back to the original size.
catseg_crop_size = (384, 384)
catseg_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='densevlm_mm.LoadCheckedSegAnnotations', num_classes=171),  # COCO-Stuff
    dict(type='ResizeShortestEdge', scale=384, max_size=1333),  # detectron2's MAX_SIZE_TRAIN
    dict(type='RandomCrop', crop_size=catseg_crop_size, cat_max_ratio=1.0),
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
catseg_test_resize = dict(type='Resize', scale=(640, 640), keep_ratio=False)
