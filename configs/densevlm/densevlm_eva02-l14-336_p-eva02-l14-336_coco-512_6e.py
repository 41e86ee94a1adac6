# Paper Table 5/12 ViT-L/14 DenseVLM*: DenseVLM with a EVA02-L-14-336 student; the same EVA02-L/14-336 P-VLM retrieves
# (the retrieval uses the P-VLM's own text embeddings, so any student family works).
_base_ = './densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py'
ckpt_dir = 'checkpoints'
model = dict(
    backbone=dict(model_name='EVA02-L-14-336', pretrained=f'{ckpt_dir}/EVA02_CLIP_L_336_psz14_s6B.pt', unlocked_groups=24),
    head=dict(text_embeddings=f'{ckpt_dir}/text/densevlm_316_EVA02-L-14-336.pt'),
    eval_text_embeddings=f'{ckpt_dir}/text/coco_panoptic_133_EVA02-L-14-336.pt')
