# Paper Table 3: training vocabulary 273 (160 things) instead of the 316 (204 things) default. Both
# embedding files come from tools/text_embeddings.py with this vocabulary.
_base_ = './densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py'
ckpt_dir = 'checkpoints'
vocabulary = 'densevlm_273'
model = dict(
    target_generator=dict(text_embeddings=f'{ckpt_dir}/text/densevlm_273_EVA02-L-14-336.pt',
                          vocabulary=vocabulary),
    head=dict(text_embeddings=f'{ckpt_dir}/text/densevlm_273_EVA02-B-16.pt', vocabulary=vocabulary))
