# Evaluate a CAT-Seg EVA02-CLIP-L/14-336 checkpoint (plain or DenseVLM, trained with
# catseg_*eva02-l14-336_coco-stuff-384_80k.py) on ADE20K-150:
#   python tools/test.py configs/catseg/catseg_eva02-l14-336_test-ade20k-150.py CKPT
# The classes come from the dataset; all weights come from CKPT (no CLIP file is read).
_base_ = [
    '../_base_/datasets/seg_ade20k-150.py',
    './_base_/catseg_eva02-l14-336.py',
    './_base_/catseg_pipelines.py',
    './_base_/catseg_runtime.py',
]
custom_imports = dict(
    imports=['densevlm_mm.models.segmentors'],
    allow_failed_imports=False)
model = dict(backbone=dict(pretrained=None), text_encoder=dict(pretrained=None))
test_pipeline = [_base_.catseg_test_resize if p['type'] == 'ResizeShortestEdge' else p
                 for p in _base_.test_pipeline]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
