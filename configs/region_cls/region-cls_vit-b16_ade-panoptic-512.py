# Region classification (Boxes / Masks-T / Masks-S, paper Tables 5/6/12) of a ViT-B-16 image
# encoder on ade panoptic at 512 px.
_base_ = ['../_base_/datasets/ade20k_panoptic_regions_512.py', '../_base_/models/region_cls.py']
model = dict(
    backbone=dict(model_name='ViT-B-16-quickgelu', pretrained='checkpoints/ViT-B-16_openai.pt'),
    eval_text_embeddings='checkpoints/text/ade20k_panoptic_150_ViT-B-16-quickgelu.pt')
