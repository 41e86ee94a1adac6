# F-ViT on a frozen EVA02-CLIP L/14-336 (spec §8.1-8.2): width 1024, embed 768, levels after blocks
# 6/10/14/23, strides 3.5/7/14/28 (+56 for P6).
_base_ = ['./fvit_eva02-b16.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)

width, embed_dim = 1024, 768
model = dict(
    backbone=dict(model_name='EVA02-L-14-336',
                  pretrained='checkpoints/EVA02_CLIP_L_336_psz14_s6B.pt',
                  out_indices=(6, 10, 14, 23)),
    neck=[
        dict(type='mmseg.Feature2Pyramid', embed_dim=width, rescales=[4, 2, 1, 0.5],
             norm_cfg=norm_cfg),
        dict(type='FPN', in_channels=[width] * 4, out_channels=256, num_outs=5, norm_cfg=norm_cfg),
    ],
    rpn_head=dict(anchor_generator=dict(strides=[3.5, 7, 14, 28, 56])),
    roi_head=dict(
        bbox_roi_extractor=dict(featmap_strides=[3.5, 7, 14, 28]),
        vlm_roi_extractor=dict(out_channels=embed_dim, featmap_strides=[14]),
        bbox_head=dict(fc_out_channels=embed_dim,
                       text_embeddings='checkpoints/text/ovcoco_65_all_EVA02-L-14-336.pt')))
