# Paper Table 7, CAT-Seg row (plain CLIP): CAT-Seg (CVPR'24) on OpenAI CLIP ViT-B/16, trained
# on COCO-Stuff-171 (80k iterations, batch 4, 384x384 crops), validated on COCO-Stuff.
# Evaluate the checkpoint with catseg_vit-b16_test-*.py (ADE-150/847, PASCAL-Context-59/459).
_base_ = [
    '../_base_/datasets/seg_coco-stuff164k.py',
    './_base_/catseg_vit-b16.py',
    './_base_/catseg_pipelines.py',
    './_base_/catseg_schedule_80k.py',
    './_base_/catseg_runtime.py',
]
custom_imports = dict(imports=['densevlm_mm.models.segmentors'], allow_failed_imports=False)
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=_base_.catseg_train_pipeline))
test_pipeline = [_base_.catseg_test_resize if p['type'] == 'ResizeShortestEdge' else p
                 for p in _base_.test_pipeline]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
