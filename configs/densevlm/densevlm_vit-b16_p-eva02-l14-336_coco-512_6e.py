# Paper Table 6 OpenAI/OpenCLIP ViT-B/16: DenseVLM with a ViT-B-16 student; the same EVA02-L/14-336 P-VLM retrieves
# (the retrieval uses the P-VLM's own text embeddings, so any student family works).
_base_ = './densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py'
ckpt_dir = 'checkpoints'
model = dict(
    backbone=dict(model_name='ViT-B-16-quickgelu', pretrained=f'{ckpt_dir}/ViT-B-16_openai.pt', unlocked_groups=12),
    head=dict(text_embeddings=f'{ckpt_dir}/text/densevlm_316_ViT-B-16-quickgelu.pt'),
    eval_text_embeddings=f'{ckpt_dir}/text/coco_panoptic_133_ViT-B-16-quickgelu.pt')
