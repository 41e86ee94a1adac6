# F-ViT B/16 for OV-LVIS (spec §8.2): 1203 classes (866 base), normalised RPN convs, class-agnostic
# FCN mask head, background weight 0.9, T_vlm 50, beta 0.6, LVIS test settings.
_base_ = ['./fvit_eva02-b16.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    rpn_head=dict(type='densevlm_mm.NormRPNHead', norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(num_classes=1203,
                       text_embeddings='checkpoints/text/ovlvis_1203_all_EVA02-B-16.pt',
                       class_names='ovlvis_1203_all', base_classes='ovlvis_866_base',
                       bg_weight=0.9, vlm_temperature=50.0, alpha=0.1, beta=0.6),
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0, aligned=True),
            out_channels=256, featmap_strides=[4, 8, 16, 32], finest_scale=56),
        mask_head=dict(type='FCNMaskHead', num_convs=4, in_channels=256, conv_out_channels=256,
                       class_agnostic=True, num_classes=1203, norm_cfg=norm_cfg,
                       loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(rcnn=dict(assigner=dict(match_low_quality=True), mask_size=28)),
    test_cfg=dict(rcnn=dict(score_thr=1e-4, nms=dict(type='nms', iou_threshold=0.5),
                            max_per_img=300, mask_thr_binary=0.5)))
