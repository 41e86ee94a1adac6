# Paper Table 2 row 3 (thing->all, stuff->stuff): which classes enter the softmax of thing / stuff regions.
_base_ = './densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py'
model = dict(head=dict(loss=dict(mode='thing_all')))
