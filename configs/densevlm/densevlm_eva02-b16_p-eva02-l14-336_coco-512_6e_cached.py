# The reference run (densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py) trained from the P-VLM
# region cache (issue 20): the P-VLM is not built; the dataloader workers read its logits of the
# drawn grid cells. Same loss, gradients and statistics as the online P-VLM. Build the cache once
# (docs/en/user_guides/region_cache.md), then train as usual:
#   bash tools/dist_build_region_cache.sh THIS_CONFIG 8      # or python tools/build_region_cache.py
#   python tools/train.py THIS_CONFIG
# Every run with this P-VLM, its 316-class embeddings, 512x512 inputs and the grid sampler (the
# theta and loss-mode ablations: *_theta-*_cached.py, *_mode-*_cached.py) reads the same cache.
_base_ = './densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py'
region_cache = 'data/coco/region_cache/train2017_p-eva02-l14-336-fp16_densevlm_316_512'
model = dict(target_generator=dict(type='CachedRegionRetriever', cache=region_cache))
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageSafe'),
    dict(type='ResizeLongestPad', size=512),
    dict(type='SampleGridRegions', max_split=6, max_regions=36, pairs='paper'),
    dict(type='LoadRegionTargets', cache=region_cache),
    dict(type='PackDenseVLMInputs'),
]))
