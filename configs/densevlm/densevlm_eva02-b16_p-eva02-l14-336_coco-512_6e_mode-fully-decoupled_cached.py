# densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e_mode-fully-decoupled.py from the P-VLM region cache of the
# reference run (the loss mode only changes how the cached logits are used: the cache is the same).
_base_ = './densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e_cached.py'
model = dict(head=dict(loss=dict(mode='fully_decoupled')))
