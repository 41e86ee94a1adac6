# region-cls_convnext-b_ade-panoptic-512.py under the reference evaluation protocol,
# the one behind the paper's Masks-T / Masks-S
# numbers (spec §6.1): full-resolution masks resized bicubically (no antialias) to the
# 16x16 dense grid (stride 32 at 512), thresholded > 0 and pooled with 0/1 weights; boxes mapped
# with one isotropic scale; inclusive stuff boxes; fp16-rounded per-class accuracy. Masks that
# vanish on the grid are counted (masks_*.empty) and scored as misclassified. See
# densevlm_mm/datasets/panoptic_regions.py for how the two protocols differ.
_base_ = ['./region-cls_convnext-b_ade-panoptic-512.py']
test_dataloader = dict(dataset=dict(region_protocol='reference', grid_stride=32))
val_dataloader = test_dataloader
