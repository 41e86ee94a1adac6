# The DenseVLM-aligned B/16 (the last checkpoint of
# configs/densevlm/densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py) in F-ViT: paper Table 8,
# DenseVLM row (AP50 novel / base / all 33.1 / 52.5 / 47.4).
# The only change from the EVA-CLIP config is this one value (equivalently:
# --cfg-options model.backbone.pretrained=PATH on fvit_eva02-b16_512_ovcoco.py).
_base_ = ['./fvit_eva02-b16_512_ovcoco.py']
model = dict(backbone=dict(
    pretrained='work_dirs/densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e/epoch_6.pth'))
