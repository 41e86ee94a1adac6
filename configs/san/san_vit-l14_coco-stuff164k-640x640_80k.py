# Paper Table 7 setting with OpenAI CLIP ViT-L/14-336 (the paper reports B/16 only): mmseg's SAN L/14
# recipe for 80k iterations, weights from the plain OpenAI CLIP:
#   python tools/model_converters/open_clip_to_san.py checkpoints/ViT-L-14-336_openai.pt \
#       checkpoints/san/openai_vit-l14-336_san.pth --config configs/san/san_vit-l14_coco-stuff164k-640x640_80k.py
_base_ = 'mmseg::san/san-vit-l14_coco-stuff164k-640x640.py'
custom_imports = dict(imports=['densevlm_mm.models.segmentors'], allow_failed_imports=False)
pretrained = 'checkpoints/san/openai_vit-l14-336_san.pth'
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
