# F-ViT on a frozen EVA02-CLIP B/16 (spec §8.1-8.2; CLIPSelf F-ViT, ported to mmdet 3.3).
# Swapping EVA-CLIP for a DenseVLM-aligned student is the one value `model.backbone.pretrained`
# (a work-dir checkpoint of configs/densevlm/*.py: the student is found inside it).
backbone_name = 'EVA02-B-16'
backbone_checkpoint = 'checkpoints/EVA02_CLIP_B_psz16_s8B.pt'
width = 768        # transformer width (pyramid / FPN input channels)
embed_dim = 512    # CLIP joint dim (= box-head fc width = text-embedding dim)
patch = 16
text_embeddings = 'checkpoints/text/ovcoco_65_all_EVA02-B-16.pt'
norm_cfg = dict(type='SyncBN', requires_grad=True)  # BN when not distributed (mmengine reverts)

# Pixel statistics: the reference feeds ImageNet statistics to the CLIP tower (spec §10.22, FIXME);
# the CLIP statistics are the fix: `model.data_preprocessor.mean=[122.7709383,116.7460125,104.09373615]`
# `model.data_preprocessor.std=[68.5005327,66.6321579,70.32316305]` (or a child config).
imagenet_mean = [123.675, 116.28, 103.53]
imagenet_std = [58.395, 57.12, 57.375]
clip_mean = [122.7709383, 116.7460125, 104.09373615]
clip_std = [68.5005327, 66.6321579, 70.32316305]

# The model is built under the mmdet scope (`_scope_`), so mmdet's parts and their own defaults
# resolve by bare name ('FPN', 'RPNHead', 'MaxIoUAssigner', ...); this package's modules carry the
# `densevlm_mm.` prefix and mmseg's simple pyramid the `mmseg.` prefix.
model = dict(
    _scope_='mmdet',
    type='densevlm_mm.FViT',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=imagenet_mean,
                           std=imagenet_std, bgr_to_rgb=True, pad_size_divisor=640),
    backbone=dict(type='densevlm_mm.DenseVLMBackbone', model_name=backbone_name,
                  pretrained=backbone_checkpoint, out_indices=(3, 5, 7, 11), with_dense=True,
                  unlocked_groups=0),
    neck=[
        # the simple feature pyramid of spec §8.1 (x4 deconv-norm-GELU-deconv, x2 deconv, x1, x1/2)
        dict(type='mmseg.Feature2Pyramid', embed_dim=width, rescales=[4, 2, 1, 0.5],
             norm_cfg=norm_cfg),
        dict(type='FPN', in_channels=[width] * 4, out_channels=256, num_outs=5,
             norm_cfg=norm_cfg),
    ],
    rpn_head=dict(
        type='RPNHead', in_channels=256, feat_channels=256, num_convs=2,
        anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                              strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    roi_head=dict(
        type='densevlm_mm.FViTRoIHead',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0, aligned=True),
            out_channels=256, featmap_strides=[4, 8, 16, 32], finest_scale=56),
        vlm_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=1, sampling_ratio=0,
                           use_torchvision=True),
            out_channels=embed_dim, featmap_strides=[patch]),
        # background='embedding': the file's "background" text row as a fixed column (CLIPSelf's
        # F-ViT, learn_bg=False); switches: 'zero' (fixed zero column), 'learned' (learn_bg=True).
        # docs/en/fidelity/fvit.md lists every difference from CLIPSelf's F-ViT and its switch.
        bbox_head=dict(
            type='densevlm_mm.FViTBBoxHead', in_channels=256, roi_feat_size=7, num_classes=65,
            num_shared_convs=4, num_shared_fcs=2, num_cls_convs=0, num_cls_fcs=1,
            num_reg_convs=0, num_reg_fcs=1, conv_out_channels=256, fc_out_channels=embed_dim,
            norm_cfg=norm_cfg, reg_class_agnostic=True,
            text_embeddings=text_embeddings, class_names='ovcoco_65_all',
            base_classes='ovcoco_48_base', bg_weight=0.6, background='embedding',
            temperature=50.0, learn_temperature=True, vlm_temperature=75.0,
            alpha=0.1, beta=0.8, cls_relu=True,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                          min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5,
                         neg_pos_ub=-1, add_gt_as_proposals=False),
            allowed_border=-1, pos_weight=-1, debug=False),
        rpn_proposal=dict(nms_pre=2000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
                          min_bbox_size=0),
        rcnn=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                          min_pos_iou=0.5, match_low_quality=False, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
                         add_gt_as_proposals=True),
            pos_weight=-1, debug=False)),
    test_cfg=dict(
        rpn=dict(nms_pre=2000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
                 min_bbox_size=0),
        rcnn=dict(score_thr=0.01, nms=dict(type='nms', iou_threshold=0.4), max_per_img=100)))
