# densevlm_eva02-b16_p-eva02-l14-336_sa1b-512_6e.py trained from the P-VLM region cache. SA-1B is
# large: exact float32 logits would take ~5.1 TiB (494 KiB per image x 11M), so this cache is
# compact: per cell the 32 largest of the 316 logits (float16) and the log-sum-exp of the other
# thing and stuff classes (53 KiB per image, ~0.55 TiB). Labels, confidences (denoising) and the
# thing/stuff split are those of the exact logits; the loss deviation is measured in
# docs/en/user_guides/region_cache.md. Build: bash tools/dist_build_region_cache.sh THIS_CONFIG N
_base_ = './densevlm_eva02-b16_p-eva02-l14-336_sa1b-512_6e.py'
region_cache = 'data/sa1b/region_cache/p-eva02-l14-336-fp16_densevlm_316_512_top32'
region_cache_mode = 'compact'
region_cache_topk = 32
model = dict(target_generator=dict(type='CachedRegionRetriever', cache=region_cache))
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageSafe', draft_size=512),
    dict(type='ResizeLongestPad', size=512),
    dict(type='SampleGridRegions', max_split=6, max_regions=36, pairs='paper'),
    dict(type='LoadRegionTargets', cache=region_cache),
    dict(type='PackDenseVLMInputs'),
]))
