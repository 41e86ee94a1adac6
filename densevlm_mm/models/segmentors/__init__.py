"""Open-vocabulary segmentors on mmseg 1.2 (SAN; CAT-Seg). Imports mmseg / mmcv ops.

Not imported by ``densevlm_mm.models`` (the core stays free of mmseg); configs name
``custom_imports=dict(imports=['densevlm_mm.models.segmentors'])``.
"""
from .catseg import CATSeg
from .catseg_eval_classes_hook import EvalClassesFromDatasetHook
from .catseg_head import CATSegHead
from .catseg_text_encoder import CATSegTextEncoder
from .san_converter import (check_san_keys, convert_open_clip_to_san,
                            open_clip_state_dict_from_checkpoint)
from .san_segmentor import SAN
from .san_text_encoder import SANTextEncoder, vocabulary_names

__all__ = [
    'SAN', 'SANTextEncoder', 'vocabulary_names', 'convert_open_clip_to_san', 'check_san_keys',
    'open_clip_state_dict_from_checkpoint', 'CATSeg', 'CATSegHead', 'CATSegTextEncoder',
    'EvalClassesFromDatasetHook'
]
