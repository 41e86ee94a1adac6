# Feature-KD baseline (CLIPSelf, paper Tables 1/11, spec §4.1): RoI features of the student's
# dense map are pulled to the frozen initial model's embedding of each 224x224 region crop.
# Reference alpha 0.7 weight ensembling.
_base_ = ['../densevlm/densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py']
ckpt_dir = 'checkpoints'
model = dict(
    _delete_=True,
    type='CLIPSelf',
    data_preprocessor=dict(type='DenseVLMDataPreprocessor'),
    backbone=dict(type='DenseVLMBackbone', model_name='EVA02-B-16',
                  pretrained=f'{ckpt_dir}/EVA02_CLIP_B_psz16_s8B.pt', unlocked_groups=12),
    target_generator=dict(
        type='CropTeacher',
        backbone=dict(type='DenseVLMBackbone', model_name='EVA02-B-16',
                      pretrained=f'{ckpt_dir}/EVA02_CLIP_B_psz16_s8B.pt')),
    head=dict(type='CLIPSelfHead', loss=dict(type='CLIPSelfLoss', weight=1.0)),
    eval_text_embeddings=f'{ckpt_dir}/text/coco_panoptic_133_EVA02-B-16.pt')
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageSafe'),
    dict(type='ResizeLongestPad', size=512, keep_ori=True),
    dict(type='SampleGridRegions', max_split=6, max_regions=36, pairs='paper'),
    dict(type='CropGridRegions', size=224),
    dict(type='PackDenseVLMInputs'),
]))
custom_hooks = [
    dict(type='EvalClassCheckHook'),
    dict(type='SkippedImagesHook'),
    dict(type='WeightEnsembleHook', alpha=0.7, module='backbone'),
]
