"""Dense-feature backbones on stock open_clip image towers."""
from .base import resample_pos_embed
from .dense_vlm_backbone import DenseVLMBackbone, check_boxes
from .eva02 import eva_rope_embed
from .eva_converter import convert_eva_clip_state_dict
from .factory import create_clip, register_bundled_configs

__all__ = [
    'DenseVLMBackbone', 'create_clip', 'register_bundled_configs', 'convert_eva_clip_state_dict',
    'resample_pos_embed', 'eva_rope_embed', 'check_boxes'
]
