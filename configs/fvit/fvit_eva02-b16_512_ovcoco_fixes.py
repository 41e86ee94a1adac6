# fvit_eva02-b16_512_ovcoco.py with the two reference FIXMEs fixed (spec §10.22): CLIP pixel
# statistics for the CLIP tower instead of ImageNet's, and no ReLU before the classifier's
# L2 normalisation. Each fix is one line; not a paper row.
_base_ = ['./fvit_eva02-b16_512_ovcoco.py']
model = dict(
    data_preprocessor=dict(mean=[122.7709383, 116.7460125, 104.09373615],
                           std=[68.5005327, 66.6321579, 70.32316305]),
    roi_head=dict(bbox_head=dict(cls_relu=False)))
