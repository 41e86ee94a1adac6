# OV-LVIS, EVA02-CLIP B/16 frozen, 512 px (DenseVLM paper Table 8, EVA-CLIP row:
# mask mAP_r / mAP_c / mAP 11.5 / 12.3 / 15.4).
_base_ = [
    './_base_/fvit_eva02-b16_lvis.py', './_base_/ovlvis_instance_512.py',
    './_base_/schedule_ovlvis_48e.py', './_base_/fvit_runtime.py'
]
model = dict(data_preprocessor=dict(pad_size_divisor=512))
