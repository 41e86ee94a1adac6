# SAN ViT-B/16 model (mmseg's san_vit-b16 model base) with this project's segmentor and text encoder:
# densevlm_mm.SAN (class-count / eval-class checks) and densevlm_mm.SANTextEncoder (mmseg's
# 'vild' prompts as mmseg's SAN; templates='densevlm' gives the 63 of backbone training).
# Children set custom_imports
# (densevlm_mm.models.segmentors), the vocabulary / num_classes and the weights.
_base_ = 'mmseg::_base_/models/san_vit-b16.py'
model = dict(
    type='densevlm_mm.SAN',
    pretrained=None,
    text_encoder=dict(type='densevlm_mm.SANTextEncoder', dataset_name=None,
                      vocabulary='coco_stuff_171', templates='vild'))
