# The tiny demo trained from the P-VLM region cache: the P-VLM is not built; the dataloader
# workers read its logits of the drawn cells (LoadRegionTargets). Build the cache first:
#   python tools/build_region_cache.py configs/densevlm/densevlm_tiny_demo_cached.py
_base_ = './densevlm_tiny_demo.py'
region_cache = 'work_dirs/tiny_demo/region_cache'
model = dict(target_generator=dict(type='CachedRegionRetriever', cache=region_cache))
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageSafe'),
    dict(type='ResizeLongestPad', size=128),
    dict(type='SampleGridRegions', max_split=6, max_regions=36, pairs='paper'),
    dict(type='LoadRegionTargets', cache=region_cache),
    dict(type='PackDenseVLMInputs'),
]))
