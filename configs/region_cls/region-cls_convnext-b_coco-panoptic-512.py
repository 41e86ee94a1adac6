# Region classification (Boxes / Masks-T / Masks-S, paper Tables 5/6/12) of a convnext_base image
# encoder on coco panoptic at 512 px.
_base_ = ['../_base_/datasets/coco_panoptic_regions_512.py', '../_base_/models/region_cls.py']
model = dict(
    backbone=dict(model_name='convnext_base',
                  pretrained='checkpoints/convnext_base_laion400m_s13b_b51k.pt'),
    eval_text_embeddings='checkpoints/text/coco_panoptic_133_convnext_base.pt')
