# Region classification (Boxes / Masks-T / Masks-S, paper Tables 5/6/12) of a convnext_base image
# encoder on ade panoptic at 512 px. `pretrained` is the plain open_clip checkpoint (the
# baseline rows); to evaluate an aligned one: tools/test.py THIS_CONFIG work_dirs/.../epoch_6.pth.
_base_ = ['../_base_/datasets/ade20k_panoptic_regions_512.py', '../_base_/default_runtime.py']
ckpt_dir = 'checkpoints'
model = dict(
    type='DenseVLM',
    data_preprocessor=dict(type='DenseVLMDataPreprocessor'),
    backbone=dict(type='DenseVLMBackbone', model_name='convnext_base',
                  pretrained=f'{ckpt_dir}/convnext_base_laion400m_s13b_b51k.pt'),
    eval_text_embeddings=f'{ckpt_dir}/text/ade20k_panoptic_150_convnext_base.pt')
test_cfg = dict(type='TestLoop')
val_cfg = dict(type='ValLoop')
