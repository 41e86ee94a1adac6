# SAN + DenseVLM with an OpenAI-initialised ViT-L/14-336 student (image tower from the DenseVLM
# work-dir checkpoint, text tower from --base):
#   python tools/model_converters/open_clip_to_san.py work_dirs/<densevlm L/14 run>/epoch_6.pth \
#       checkpoints/san/densevlm_vit-l14-336_san.pth --base checkpoints/ViT-L-14-336_openai.pt \
#       --config configs/san/san_densevlm-vit-l14_coco-stuff164k-640x640_80k.py
_base_ = './san_vit-l14_coco-stuff164k-640x640_80k.py'
model = dict(pretrained='checkpoints/san/densevlm_vit-l14-336_san.pth')
