# Paper Table 7, SAN + DenseVLM row (ViT-B/16, OpenAI CLIP initialised): the same recipe, CLIP image
# weights from the DenseVLM student (configs/densevlm/densevlm_vit-b16_p-eva02-l14-336_coco-512_6e.py),
# the text tower from OpenAI CLIP (DenseVLM does not train it):
#   python tools/model_converters/open_clip_to_san.py work_dirs/<densevlm run>/epoch_6.pth \
#       checkpoints/san/densevlm_vit-b16_san.pth --base checkpoints/ViT-B-16_openai.pt \
#       --config configs/san/san_densevlm-vit-b16_coco-stuff164k-640x640_80k.py
_base_ = './san_vit-b16_coco-stuff164k-640x640_80k.py'
model = dict(pretrained='checkpoints/san/densevlm_vit-b16_san.pth')
