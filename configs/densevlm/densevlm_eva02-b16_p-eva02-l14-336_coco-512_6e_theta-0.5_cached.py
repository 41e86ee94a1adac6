# densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e_theta-0.5.py from the P-VLM region cache of the
# reference run (the threshold is applied to the cached logits: the cache is the same).
_base_ = './densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e_cached.py'
model = dict(head=dict(loss=dict(theta=0.5)))
