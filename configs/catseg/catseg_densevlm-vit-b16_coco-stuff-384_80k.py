# Paper Table 7, CAT-Seg + DenseVLM row: catseg_vit-b16_coco-stuff-384_80k.py
# with the image tower taken from the DenseVLM student of
# configs/densevlm/densevlm_vit-b16_p-eva02-l14-336_coco-512_6e.py
# (its work-dir checkpoint; the text tower stays the plain CLIP one). The swap is this one line.
_base_ = './catseg_vit-b16_coco-stuff-384_80k.py'
student = 'work_dirs/densevlm_vit-b16_p-eva02-l14-336_coco-512_6e/epoch_6.pth'
model = dict(backbone=dict(pretrained=student))
