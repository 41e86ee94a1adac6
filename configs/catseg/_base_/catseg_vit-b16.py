# CAT-Seg (CVPR'24) with OpenAI CLIP ViT-B/16: both towers from the same open_clip checkpoint, q/v
# fine-tuning, guidance from CLIP blocks 3 and 7, 384x384 CLIP input (24x24 grid), two aggregation
# layers (window 12, class pooling 2x2, 256 class tokens), CAT-Seg's single prompt template.
# The OpenAI weights use QuickGELU: open_clip's `ViT-B-16-quickgelu` config.
clip_model = 'ViT-B-16-quickgelu'
clip_checkpoint = 'checkpoints/ViT-B-16_openai.pt'
model = dict(
    type='densevlm_mm.CATSeg',
    data_preprocessor=dict(
        type='mmseg.SegDataPreProcessor',
        mean=[122.7709383, 116.7460125, 104.09373615],  # CLIP pixel mean / std (RGB, 0-255)
        std=[68.5005327, 66.6321579, 70.32316305],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(384, 384)),
    backbone=dict(type='DenseVLMBackbone', model_name=clip_model, pretrained=clip_checkpoint,
                  out_indices=(3, 7), with_dense=True),
    text_encoder=dict(type='CATSegTextEncoder', model_name=clip_model, pretrained=clip_checkpoint,
                      templates='catseg-single'),
    decode_head=dict(type='CATSegHead', hidden_dim=128, appearance_guidance_dim=128,
                     text_guidance_dim=128, num_layers=2, num_heads=4, window_size=12,
                     pooling_size=(2, 2), pad_len=256, clip_upsample_dims=(256, 128),
                     decoder_dims=(64, 32), decoder_guidance_dims=(32, 16)),
    train_classes='mmseg.COCOStuffDataset',
    test_classes='from_dataset',
    finetune='qv',
    clip_resolution=(384, 384),
    ignore_index=255,
    test_cfg=dict(mode='slide', crop_size=(384, 384), stride=(256, 256), global_view=True))
