"""Building stock open_clip models offline: the public home of :func:`create_clip`.

The implementation lives in :mod:`densevlm_mm.models.backbones.factory`, beside the EVA-CLIP key
converter it uses, so that the backbone package imports nothing above it (no import cycle).
"""
from .backbones.factory import (BUNDLED_CONFIG_DIR, TINY_TIMM_VARIANTS, build_clip_model,
                                check_local_checkpoint, create_clip, load_clip_weights,
                                prepare_clip_state_dict, register_bundled_configs,
                                register_timm_variant)

__all__ = ['register_bundled_configs', 'create_clip', 'build_clip_model',
           'check_local_checkpoint', 'register_timm_variant',
           'prepare_clip_state_dict', 'load_clip_weights', 'TINY_TIMM_VARIANTS',
           'BUNDLED_CONFIG_DIR']
