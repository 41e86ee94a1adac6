# Bit-for-bit reference behaviour where it differs from the paper (spec §10): the 17 constrained
# grid pairs, the thing/stuff off-by-one (index 203 'house' treated as stuff), un-normalised
# 316-class text rows (make the files with --no-normalize; the retriever's normalize_text applies
# to teacher and student), the reference's betas (0.9, 0.999).
_base_ = './densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py'
ckpt_dir = 'checkpoints'
model = dict(
    target_generator=dict(
        reference_thing_count=204, normalize_text=False,
        text_embeddings=f'{ckpt_dir}/text/densevlm_316_EVA02-L-14-336_unnormalized.pt'),
    head=dict(text_embeddings=f'{ckpt_dir}/text/densevlm_316_EVA02-B-16_unnormalized.pt'))
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageSafe'),
    dict(type='ResizeLongestPad', size=512),
    dict(type='SampleGridRegions', max_split=6, max_regions=36, pairs='reference'),
    dict(type='PackDenseVLMInputs'),
]))
optim_wrapper = dict(optimizer=dict(betas=(0.9, 0.999), eps=1e-8))
