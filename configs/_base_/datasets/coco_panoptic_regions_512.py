# Region classification on COCO panoptic val2017 (spec §6): GT thing boxes, thing masks and stuff
# masks of every segment, 512 input. Reports Boxes / Masks-T / Masks-S top-1/top-5.
val_data_root = 'data/coco/'
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
        type='CocoPanopticRegionDataset',
        data_root=val_data_root,
        ann_file='annotations/panoptic_val2017.json',
        data_prefix=dict(img='val2017/', seg='annotations/panoptic_val2017/'),
        # class names (and their order) from the bundled vocabulary the embedding files use;
        # the dataset checks the count and the thing/stuff split against its json
        vocabulary='coco_panoptic_133',
        pipeline=val_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='RegionClassificationMetric')
test_evaluator = val_evaluator
