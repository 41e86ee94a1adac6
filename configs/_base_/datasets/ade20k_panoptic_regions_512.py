# Region classification on ADE20K panoptic val (2000 images, 150 classes; spec §6.1): the COCO
# panoptic set-up with ADE's files and category list.
_base_ = ['./coco_panoptic_regions_512.py']
val_dataloader = dict(
    dataset=dict(
        type='ADE20KPanopticRegionDataset',
        data_root='data/ade/',
        ann_file='ade20k_panoptic_val.json',
        data_prefix=dict(img='ADEChallengeData2016/images/validation/',
                         seg='ade20k_panoptic_val/'),
        vocabulary='ade20k_panoptic_150',
    ))
test_dataloader = val_dataloader
