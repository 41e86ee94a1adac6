# Paper Table 12 ModifiedResNet RN50x4: DenseVLM with a RN50x4 student; the same EVA02-L/14-336 P-VLM retrieves
# (the retrieval uses the P-VLM's own text embeddings, so any student family works).
_base_ = './densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py'
ckpt_dir = 'checkpoints'
model = dict(
    backbone=dict(model_name='RN50x4-quickgelu', pretrained=f'{ckpt_dir}/RN50x4_openai.pt', unlocked_groups=5),
    head=dict(text_embeddings=f'{ckpt_dir}/text/densevlm_316_RN50x4-quickgelu.pt'),
    eval_text_embeddings=f'{ckpt_dir}/text/coco_panoptic_133_RN50x4-quickgelu.pt')
