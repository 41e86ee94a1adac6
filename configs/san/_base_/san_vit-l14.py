# SAN ViT-L/14 (336 px CLIP) model: the L/14 settings of mmseg's san-vit-l14_coco-stuff164k config
# (18 image-encoder blocks, 6 recognition blocks, encoder resolution 0.7) on san_vit-b16.py.
_base_ = './san_vit-b16.py'
model = dict(
    encoder_resolution=0.7,
    image_encoder=dict(img_size=(336, 336), patch_size=14, embed_dims=1024, num_layers=18,
                       num_heads=16, out_indices=(5, 11, 17)),
    text_encoder=dict(embed_dims=768, num_layers=12, num_heads=12, output_dims=768),
    decode_head=dict(san_cfg=dict(clip_channels=1024, cfg_decoder=dict(num_heads=16)),
                     maskgen_cfg=dict(num_layers=6, embed_dims=1024, num_heads=16, out_dims=768)))
