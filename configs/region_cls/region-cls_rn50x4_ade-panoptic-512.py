# Region classification (Boxes / Masks-T / Masks-S, paper Tables 5/6/12) of a RN50x4 image
# encoder on ade panoptic at 512 px.
_base_ = ['../_base_/datasets/ade20k_panoptic_regions_512.py', '../_base_/models/region_cls.py']
model = dict(
    backbone=dict(model_name='RN50x4-quickgelu', pretrained='checkpoints/RN50x4_openai.pt'),
    eval_text_embeddings='checkpoints/text/ade20k_panoptic_150_RN50x4-quickgelu.pt')
