from .clipself_head import CLIPSelfHead
from .densevlm_head import DenseVLMHead
from .region_clip_head import RegionCLIPHead

__all__ = ['DenseVLMHead', 'CLIPSelfHead', 'RegionCLIPHead']
