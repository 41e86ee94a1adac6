"""Dense-feature backbones on stock open_clip image towers."""
from ..clip_factory import create_clip, register_bundled_configs
from .dense_vlm_backbone import DenseVLMBackbone, resample_pos_embed
from .eva02 import eva_rope_embed
from .eva_converter import convert_eva_clip_state_dict

__all__ = [
    'DenseVLMBackbone', 'create_clip', 'register_bundled_configs', 'convert_eva_clip_state_dict',
    'resample_pos_embed', 'eva_rope_embed'
]
