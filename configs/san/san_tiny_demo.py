# Tiny SAN on the generated segmentation fixture (CPU): the tiny OpenAI-style ViT
# (densevlm-tiny-vit: width 64, 3 blocks, patch 16, embed 32; GELU) split 2 + 1 between the image
# encoder and the head, a 2-layer side adapter, 10 queries. A child of mmseg's own SAN config: only
# the sizes, data and schedule differ. Weights: any tiny open_clip / DenseVLM checkpoint converted by
#   python tools/model_converters/open_clip_to_san.py CKPT work_dirs/san_tiny/san_init.pth --split 2 \
#       [--base OPEN_CLIP_CKPT] --config configs/san/san_tiny_demo.py
# data: make_synthetic_segmentation('work_dirs/san_tiny/data') (densevlm_mm.datasets.synthetic_segmentation)
#   python tools/train.py configs/san/san_tiny_demo.py
_base_ = 'mmseg::san/san-vit-b16_coco-stuff164k-640x640.py'

custom_imports = dict(
    imports=['densevlm_mm.models.segmentors', 'densevlm_mm.datasets.synthetic_segmentation'],
    allow_failed_imports=False)

classes = ['sky', 'car', 'grass', 'person', 'road', 'dog']  # make_synthetic_segmentation(num_classes=6)
num_classes = len(classes)
data_root = 'work_dirs/san_tiny/data'
pretrained = 'work_dirs/san_tiny/san_init.pth'  # tools/model_converters/open_clip_to_san.py output

data_preprocessor = dict(size_divisor=32, test_cfg=dict(size_divisor=32))
model = dict(
    type='densevlm_mm.SAN',
    data_preprocessor=data_preprocessor,
    pretrained=pretrained,
    encoder_resolution=1.0,
    image_encoder=dict(img_size=(64, 64), embed_dims=64, num_layers=2, num_heads=2,
                       out_indices=(0, 1), act_cfg=dict(type='GELU')),
    text_encoder=dict(
        type='densevlm_mm.SANTextEncoder', dataset_name=None, vocabulary=classes,
        templates='densevlm', embed_dims=32, num_layers=2, num_heads=2, output_dims=32,
        act_cfg=dict(type='GELU')),
    decode_head=dict(
        num_classes=num_classes,
        deep_supervision_idxs=[0],
        san_cfg=dict(clip_channels=64, embed_dims=32, num_queries=10,
                     cfg_encoder=dict(num_encode_layer=2, num_heads=2, mlp_ratio=2),
                     fusion_index=[0, 1, 2],
                     cfg_decoder=dict(num_heads=2, num_layers=1, embed_channels=32,
                                      mlp_channels=32, num_mlp=2)),
        maskgen_cfg=dict(sos_token_num=10, num_layers=1, embed_dims=64, num_heads=2, out_dims=32,
                         act_cfg=dict(type='GELU')),
        train_cfg=dict(num_points=1024),
        loss_decode=[
            dict(type='CrossEntropyLoss', loss_name='loss_cls_ce', loss_weight=2.0,
                 class_weight=[1.0] * num_classes + [0.1]),
            dict(type='CrossEntropyLoss', use_sigmoid=True, loss_name='loss_mask_ce',
                 loss_weight=5.0),
            dict(type='DiceLoss', ignore_index=None, naive_dice=True, eps=1,
                 loss_name='loss_mask_dice', loss_weight=5.0)
        ]))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='densevlm_mm.SyntheticSegDataset', data_root=data_root,
                 data_prefix=dict(img_path='images/train', seg_map_path='annotations/train'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='densevlm_mm.SyntheticSegDataset', data_root=data_root,
                 data_prefix=dict(img_path='images/val', seg_map_path='annotations/val'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 40
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters,
                 val_begin=1)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, save_best=None))
custom_hooks = [dict(type='densevlm_mm.EvalClassCheckHook')]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=max_iters,
                        by_epoch=False)]
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
