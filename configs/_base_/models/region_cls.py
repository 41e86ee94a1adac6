# Region classification (Boxes / Masks-T / Masks-S, paper Tables 5/6/12): an image encoder scored
# on the regions of a panoptic set, no training. An experiment file inherits this and a dataset
# base and sets only backbone.model_name, backbone.pretrained and eval_text_embeddings.
# `pretrained` is the plain open_clip checkpoint (the baseline rows); to evaluate an aligned one:
# tools/test.py THE_CONFIG work_dirs/.../epoch_6.pth.
_base_ = ['../default_runtime.py']
model = dict(
    type='DenseVLM',
    data_preprocessor=dict(type='DenseVLMDataPreprocessor'),
    # evaluation only: nothing trains, so no probe for parameters training would leave unused
    backbone=dict(type='DenseVLMBackbone', freeze_unused=False),
    eval_text_embeddings=None)
test_cfg = dict(type='TestLoop')
val_cfg = dict(type='ValLoop')
