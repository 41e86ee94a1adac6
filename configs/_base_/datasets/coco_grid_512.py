# Training data of the reference run (spec §2): every image of COCO train2017 (annotations are
# not used), longest side resized to 512 (PIL bicubic), padded bottom/right to 512x512, one random
# m x n grid of regions per image. Batch 16 on one GPU = the reference's effective recipe.
data_root = 'data/coco/'
image_size = 512
train_pipeline = [
    dict(type='LoadImageSafe'),
    dict(type='ResizeLongestPad', size=image_size),
    dict(type='SampleGridRegions', max_split=6, max_regions=36, pairs='paper'),
    dict(type='PackDenseVLMInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='CocoImageDataset',
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        pipeline=train_pipeline,
    ),
)
