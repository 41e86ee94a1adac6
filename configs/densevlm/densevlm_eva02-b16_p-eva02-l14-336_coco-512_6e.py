# DenseVLM, the reference run (paper Table 5 "DenseVLM ViT-B/16", spec §5.1): EVA02-CLIP-B/16
# student, CLIPSelf EVA02-CLIP-L/14-336 P-VLM, COCO train2017 images, 512x512, batch 16 on one
# GPU (the reference's effective recipe, spec §5.3), AdamW lr 1e-5 betas (0.9, 0.98) wd 0.1,
# 1000 warm-up iterations + cosine, 6 epochs, AMP, region classification on COCO panoptic every
# epoch, and the reference's post-epoch weight ensembling alpha=0.9 (spec §5.4).
_base_ = [
    '../_base_/models/densevlm_eva02-b16_p-eva02-l14-336.py',
    '../_base_/datasets/coco_grid_512.py',
    '../_base_/datasets/coco_panoptic_regions_512.py',
    '../_base_/schedules/adamw_lr1e-5_warmup1k_cosine_6e.py',
    '../_base_/default_runtime.py',
]
custom_hooks = [
    dict(type='EvalClassCheckHook'),
    dict(type='SkippedImagesHook'),
    dict(type='WeightEnsembleHook', alpha=0.9, module='backbone'),
]
