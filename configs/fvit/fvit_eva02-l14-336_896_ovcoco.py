# OV-COCO, EVA02-CLIP L/14-336 frozen, 896 px (the public CLIPSelf F-ViT L/14 setting).
_base_ = [
    './_base_/fvit_eva02-l14-336.py', './_base_/ovcoco_detection_896.py',
    './_base_/schedule_ovcoco_3e.py', './_base_/fvit_runtime.py'
]
model = dict(data_preprocessor=dict(pad_size_divisor=896))
