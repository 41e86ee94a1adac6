# Region classification (Boxes / Masks-T / Masks-S, paper Tables 5/6/12) of a ViT-B-16 image
# encoder on coco panoptic at 512 px. `pretrained` is the plain open_clip checkpoint (the
# baseline rows); to evaluate an aligned one: tools/test.py THIS_CONFIG work_dirs/.../epoch_6.pth.
_base_ = ['../_base_/datasets/coco_panoptic_regions_512.py', '../_base_/default_runtime.py']
ckpt_dir = 'checkpoints'
model = dict(
    type='DenseVLM',
    data_preprocessor=dict(type='DenseVLMDataPreprocessor'),
    backbone=dict(type='DenseVLMBackbone', model_name='ViT-B-16',
                  pretrained=f'{ckpt_dir}/ViT-B-16_openai.pt'),
    eval_text_embeddings=f'{ckpt_dir}/text/coco_panoptic_133_ViT-B-16.pt')
test_cfg = dict(type='TestLoop')
val_cfg = dict(type='ValLoop')
