# SA-1B read straight from its original sa_*.tar shards (streaming, no unpacking; paper Fig. 5).
# Shards are split across ranks and dataloader workers; `sampler=None` (an iterable dataset).
# Write the sample count once: python -m densevlm_mm.datasets.sa1b index 'data/sa1b/sa_*.tar' -o
# data/sa1b/index.json, and pass it as `num_samples` to skip scanning the tar headers.
image_size = 512
train_pipeline = [
    dict(type='LoadImageSafe', draft_size=image_size),
    dict(type='ResizeLongestPad', size=image_size),
    dict(type='SampleGridRegions', max_split=6, max_regions=36, pairs='paper'),
    dict(type='PackDenseVLMInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,
    sampler=None,
    dataset=dict(
        type='SA1BShardDataset',
        shards='data/sa1b/sa_*.tar',
        pipeline=train_pipeline,
    ),
)
