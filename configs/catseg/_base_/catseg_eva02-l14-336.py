# CAT-Seg (CVPR'24 ViT-L settings) with EVA02-CLIP-L/14-336 (the project's L/14 DenseVLM student
# family): guidance from blocks 7 and 15, 336x336 CLIP input (24x24 grid), otherwise as ViT-B/16.
_base_ = './catseg_vit-b16.py'
clip_model = 'EVA02-L-14-336'
clip_checkpoint = 'checkpoints/EVA02_CLIP_L_336_psz14_s6B.pt'
model = dict(
    backbone=dict(model_name=clip_model, pretrained=clip_checkpoint, out_indices=(7, 15)),
    text_encoder=dict(model_name=clip_model, pretrained=clip_checkpoint),
    clip_resolution=(336, 336))
