# DenseVLM reference model (spec §3, §5.1): EVA02-CLIP-B/16 student (all 12 blocks train; patch
# embed, pos-embed, final norm and projection frozen), CLIPSelf-refined EVA02-CLIP-L/14-336 P-VLM,
# the 316-class thing/stuff vocabulary, tau 0.01, theta 0.3, decoupled mode 'densevlm'.
# Checkpoints and embedding files are local paths (nothing is downloaded): see configs/README.md.
ckpt_dir = 'checkpoints'
vocabulary = 'densevlm_316'
model = dict(
    type='DenseVLM',
    data_preprocessor=dict(type='DenseVLMDataPreprocessor'),
    backbone=dict(
        type='DenseVLMBackbone',
        model_name='EVA02-B-16',
        pretrained=f'{ckpt_dir}/EVA02_CLIP_B_psz16_s8B.pt',
        unlocked_groups=12,
    ),
    target_generator=dict(
        type='RegionRetriever',
        backbone=dict(
            type='DenseVLMBackbone',
            model_name='EVA02-L-14-336',
            pretrained=f'{ckpt_dir}/clipself_coco_6_save6_512_eva_vitl14_24layers.pt',
        ),
        text_embeddings=f'{ckpt_dir}/text/densevlm_316_EVA02-L-14-336.pt',
        vocabulary=vocabulary,
        tau=0.01,  # the one place: the losses score the student with the retrieval's tau
        normalize_text=True,  # and its text normalisation
        precision='fp16',
    ),
    head=dict(
        type='DenseVLMHead',
        loss=dict(type='DecoupledAlignLoss', mode='densevlm', theta=0.3, reduction='reference'),
        text_embeddings=f'{ckpt_dir}/text/densevlm_316_EVA02-B-16.pt',
        vocabulary=vocabulary,
    ),
    eval_text_embeddings=f'{ckpt_dir}/text/coco_panoptic_133_EVA02-B-16.pt',
)
