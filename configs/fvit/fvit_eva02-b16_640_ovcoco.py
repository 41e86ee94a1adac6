# OV-COCO, EVA02-CLIP B/16 frozen, 640 px (the public CLIPSelf F-ViT B/16 OV-COCO setting).
_base_ = [
    './_base_/fvit_eva02-b16.py', './_base_/ovcoco_detection.py',
    './_base_/schedule_ovcoco_3e.py', './_base_/fvit_runtime.py'
]
model = dict(data_preprocessor=dict(pad_size_divisor=640))
