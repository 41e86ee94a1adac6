# OV-COCO, EVA02-CLIP L/14-336 frozen, 512 px (the DenseVLM paper's input size).
_base_ = [
    './_base_/fvit_eva02-l14-336.py', './_base_/ovcoco_detection_512.py',
    './_base_/schedule_ovcoco_3e.py', './_base_/fvit_runtime.py'
]
model = dict(data_preprocessor=dict(pad_size_divisor=512))
