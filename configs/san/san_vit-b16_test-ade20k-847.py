# Evaluate a SAN ViT-B/16 checkpoint (plain or DenseVLM, trained by san_*vit-b16_coco-stuff164k-640x640_80k.py)
# on ade20k-847 (paper Table 7: A-150 / A-847 / PC-459; PC-59 is an extra column):
#   python tools/test.py configs/san/san_vit-b16_test-ade20k-847.py work_dirs/<run>/iter_80000.pth
# All weights come from the checkpoint; the text rows are recomputed for this vocabulary.
_base_ = [
    '../_base_/datasets/seg_ade20k-847.py',
    './_base_/san_vit-b16.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['densevlm_mm.models.segmentors', 'densevlm_mm.datasets.seg_datasets'], allow_failed_imports=False)
model = dict(
    text_encoder=dict(dataset_name=None, vocabulary='ade20k_847'),
    decode_head=dict(num_classes=847))
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
custom_hooks = [dict(type='densevlm_mm.EvalClassCheckHook')]
