# OV-LVIS, EVA02-CLIP L/14-336 frozen, 512 px.
_base_ = [
    './_base_/fvit_eva02-l14-336_lvis.py', './_base_/ovlvis_instance_512.py',
    './_base_/schedule_ovlvis_48e.py', './_base_/fvit_runtime.py'
]
model = dict(data_preprocessor=dict(pad_size_divisor=512))
