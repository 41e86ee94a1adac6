# Region classification (Boxes / Masks-T / Masks-S, paper Tables 5/6/12) of a EVA02-B-16 image
# encoder on ade panoptic at 512 px.
_base_ = ['../_base_/datasets/ade20k_panoptic_regions_512.py', '../_base_/models/region_cls.py']
model = dict(
    backbone=dict(model_name='EVA02-B-16', pretrained='checkpoints/EVA02_CLIP_B_psz16_s8B.pt'),
    eval_text_embeddings='checkpoints/text/ade20k_panoptic_150_EVA02-B-16.pt')
