# Paper Table 7, SAN row (OpenAI CLIP ViT-B/16): mmseg's SAN recipe on COCO-Stuff-171 for 80k
# iterations (mmseg's config: 60k), weights from the plain OpenAI CLIP:
#   python tools/model_converters/open_clip_to_san.py checkpoints/ViT-B-16_openai.pt \
#       checkpoints/san/openai_vit-b16_san.pth --config configs/san/san_vit-b16_coco-stuff164k-640x640_80k.py
#   bash tools/dist_train.sh configs/san/san_vit-b16_coco-stuff164k-640x640_80k.py 4
# Everything else is mmseg's SAN (class rows from mmseg's 'vild' prompts; switch:
# model.text_encoder.templates='densevlm' for the 63 templates of backbone training); the
# differences and their switches: docs/en/fidelity/san.md.
_base_ = 'mmseg::san/san-vit-b16_coco-stuff164k-640x640.py'
custom_imports = dict(imports=['densevlm_mm.models.segmentors'], allow_failed_imports=False)
pretrained = 'checkpoints/san/openai_vit-b16_san.pth'
model = dict(
    type='densevlm_mm.SAN',
    pretrained=pretrained,
    text_encoder=dict(type='densevlm_mm.SANTextEncoder', dataset_name='coco-stuff164k',
                      templates='vild'))
max_iters = 80000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=5000,
                 val_begin=max_iters - 5000)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=max_iters,
                        by_epoch=False)]
custom_hooks = [dict(type='densevlm_mm.EvalClassCheckHook')]
