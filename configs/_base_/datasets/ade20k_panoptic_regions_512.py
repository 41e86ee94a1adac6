# Region classification on ADE20K panoptic val (2000 images, 150 classes; spec §6.1).
val_data_root = 'data/ade/'
eval_image_size = 512
val_pipeline = [
    dict(type='LoadPanopticRegions'),
    dict(type='ResizeLongestPad', size=eval_image_size),
    dict(type='PackDenseVLMInputs'),
]
val_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ADE20KPanopticRegionDataset',
        data_root=val_data_root,
        ann_file='ade20k_panoptic_val.json',
        data_prefix=dict(img='ADEChallengeData2016/images/validation/',
                         seg='ade20k_panoptic_val/'),
        # class names (and their order) from the bundled vocabulary the embedding files use;
        # the dataset checks the count and the thing/stuff split against its json
        vocabulary='ade20k_panoptic_150',
        pipeline=val_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='RegionClassificationMetric')
test_evaluator = val_evaluator
