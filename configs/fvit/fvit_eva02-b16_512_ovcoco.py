# OV-COCO, EVA02-CLIP B/16 frozen, 512 px (DenseVLM paper Table 8, EVA-CLIP row:
# AP50 novel / base / all 17.5 / 41.0 / 34.9).
_base_ = [
    './_base_/fvit_eva02-b16.py', './_base_/ovcoco_detection_512.py',
    './_base_/schedule_ovcoco_3e.py', './_base_/fvit_runtime.py'
]
model = dict(data_preprocessor=dict(pad_size_divisor=512))
