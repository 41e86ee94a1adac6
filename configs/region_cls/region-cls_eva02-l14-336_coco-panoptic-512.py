# Region classification (Boxes / Masks-T / Masks-S, paper Tables 5/6/12) of a EVA02-L-14-336 image
# encoder on coco panoptic at 512 px.
_base_ = ['../_base_/datasets/coco_panoptic_regions_512.py', '../_base_/models/region_cls.py']
model = dict(
    backbone=dict(model_name='EVA02-L-14-336',
                  pretrained='checkpoints/EVA02_CLIP_L_336_psz14_s6B.pt'),
    eval_text_embeddings='checkpoints/text/coco_panoptic_133_EVA02-L-14-336.pt')
