# Paper Table 4: region denoising threshold theta = 0.0 (0.3 is the default).
_base_ = './densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py'
model = dict(head=dict(loss=dict(theta=0.0)))
