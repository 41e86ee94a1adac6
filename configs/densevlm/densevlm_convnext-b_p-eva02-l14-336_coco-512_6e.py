# Paper Table 12 ConvNeXt-B: DenseVLM with a convnext_base student; the same EVA02-L/14-336 P-VLM retrieves
# (the retrieval uses the P-VLM's own text embeddings, so any student family works).
_base_ = './densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py'
ckpt_dir = 'checkpoints'
model = dict(
    backbone=dict(model_name='convnext_base', pretrained=f'{ckpt_dir}/convnext_base_laion400m_s13b_b51k.pt', unlocked_groups=5),
    head=dict(text_embeddings=f'{ckpt_dir}/text/densevlm_316_convnext_base.pt'),
    eval_text_embeddings=f'{ckpt_dir}/text/coco_panoptic_133_convnext_base.pt')
