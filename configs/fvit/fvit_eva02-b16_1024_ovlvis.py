# OV-LVIS, EVA02-CLIP B/16 frozen, 1024 px (the public CLIPSelf F-ViT B/16 OV-LVIS setting).
_base_ = [
    './_base_/fvit_eva02-b16_lvis.py', './_base_/ovlvis_instance.py',
    './_base_/schedule_ovlvis_48e.py', './_base_/fvit_runtime.py'
]
model = dict(data_preprocessor=dict(pad_size_divisor=1024))
