# DenseVLM trained on SA-1B images (paper Fig. 5: scaling the unlabeled data), streamed from the
# original tar shards. Same model, schedule and COCO-panoptic evaluation as the reference run.
# SA-1B's 2250x1500 JPEGs are decoded at reduced scale (LoadImageSafe draft_size=512): ~3x faster
# loading, pixels slightly different from full decode + resize.
_base_ = [
    '../_base_/models/densevlm_eva02-b16_p-eva02-l14-336.py',
    '../_base_/datasets/sa1b_grid_512.py',
    '../_base_/datasets/coco_panoptic_regions_512.py',
    '../_base_/schedules/adamw_lr1e-5_warmup1k_cosine_6e.py',
    '../_base_/default_runtime.py',
]
custom_hooks = [
    dict(type='EvalClassCheckHook'),
    dict(type='SkippedImagesHook'),
]
# an iterable dataset has no sampler: the dataset reshuffles its shards per epoch itself
default_hooks = dict(sampler_seed=None)
