# RegionCLIP-style baseline (paper Tables 1/11, spec §4.2): BCE of pseudo-labelled region
# proposals (coco_pseudo_4764.json: region-noun pairs) against 4764 noun embeddings, 100 sampled
# classes per batch. Reference alpha 0.7.
_base_ = ['../densevlm/densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py']
ckpt_dir = 'checkpoints'
model = dict(
    _delete_=True,
    type='RegionCLIP',
    data_preprocessor=dict(type='DenseVLMDataPreprocessor'),
    backbone=dict(type='DenseVLMBackbone', model_name='EVA02-B-16',
                  pretrained=f'{ckpt_dir}/EVA02_CLIP_B_psz16_s8B.pt', unlocked_groups=12),
    head=dict(type='RegionCLIPHead',
              loss=dict(type='RegionCLIPLoss', num_sampled_classes=100),
              noun_embeddings=f'{ckpt_dir}/text/coco_nouns_4764_EVA02-B-16.pt',
              logit_scale=100.0),
    eval_text_embeddings=f'{ckpt_dir}/text/coco_panoptic_133_EVA02-B-16.pt')
train_dataloader = dict(dataset=dict(
    _delete_=True,
    type='CocoPseudoRegionDataset',
    data_root='data/coco/',
    ann_file='annotations/coco_pseudo_4764.json',
    data_prefix=dict(img='train2017/'),
    max_regions=20,
    pipeline=[
        dict(type='LoadImageSafe'),
        dict(type='ResizeLongestPad', size=512),
        dict(type='PackDenseVLMInputs'),
    ]))
custom_hooks = [
    dict(type='EvalClassCheckHook'),
    dict(type='SkippedImagesHook'),
    dict(type='WeightEnsembleHook', alpha=0.7, module='backbone'),
]
