# The embedded default's detection stage: the tiny student aligned by `make demo` (its last
# checkpoint, work_dirs/tiny_demo/train/epoch_5.pth) dropped into a tiny F-ViT that inherits the real
# F-ViT configs; trained a few iterations on generated COCO-style images (4 classes: person / car
# base, dog / bottle novel), tested with OVCocoMetric (AP50 novel / base / all). The files under
# work_dirs/tiny_demo/detect are written by tools/demo_stages/detect.py.
_base_ = [
    './_base_/fvit_eva02-b16.py', './_base_/ovcoco_detection.py',
    './_base_/schedule_ovcoco_3e.py', './_base_/fvit_runtime.py'
]
demo_root = 'work_dirs/tiny_demo'
data_root = f'{demo_root}/detect/data/'
image_size = 128
width, embed_dim, channels = 64, 32, 32
classes = ['person', 'car', 'dog', 'bottle']
split = dict(classes=classes, base_classes=['person', 'car'], novel_classes=['dog', 'bottle'])
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(pad_size_divisor=image_size),
    backbone=dict(model_name='densevlm-tiny-eva02', pretrained=f'{demo_root}/train/epoch_5.pth',
                  out_indices=(0, 1, 1, 2)),
    neck=[
        dict(type='mmseg.Feature2Pyramid', embed_dim=width, rescales=[4, 2, 1, 0.5],
             norm_cfg=norm_cfg),
        dict(type='FPN', in_channels=[width] * 4, out_channels=channels, num_outs=5,
             norm_cfg=norm_cfg),
    ],
    rpn_head=dict(in_channels=channels, feat_channels=channels,
                  anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        vlm_roi_extractor=dict(out_channels=embed_dim),
        bbox_head=dict(in_channels=channels, conv_out_channels=channels,
                       fc_out_channels=embed_dim, norm_cfg=norm_cfg, num_classes=len(classes),
                       text_embeddings=f'{demo_root}/detect/text/detect_classes.pt',
                       class_names=classes, base_classes=split['base_classes'])),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=(image_size, image_size), ratio_range=(0.8, 1.2),
         keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=(image_size, image_size),
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='train/instances.json',
                 data_prefix=dict(img='train/images/'), filter_cfg=dict(filter_empty_gt=True),
                 pipeline=train_pipeline, **split))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='val/instances.json',
                 data_prefix=dict(img='val/images/'), pipeline=test_pipeline, **split))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'val/instances.json')
test_evaluator = val_evaluator

# 16 images / batch 4 = 4 iterations per epoch, 4 epochs (16 iterations); plain fp32 on CPU
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=5e-3, betas=(0.9, 0.999), weight_decay=0.1),
                     clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
train_cfg = dict(max_epochs=4, val_interval=4)
default_hooks = dict(logger=dict(interval=4),
                     checkpoint=dict(interval=4, max_keep_ckpts=1))
log_processor = dict(window_size=4)
auto_scale_lr = dict(base_batch_size=4)
