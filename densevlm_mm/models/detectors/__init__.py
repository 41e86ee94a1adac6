"""Downstream open-vocabulary detectors on the aligned backbone (F-ViT on mmdet 3.3).

Imports mmdet (and mmseg's ``Feature2Pyramid`` through configs); the core of ``densevlm_mm`` does not
import this package. Configs load it with ``custom_imports`` (``configs/fvit/_base_/``).
"""
from .class_check_hook import DetectorClassCheckHook
from .fvit import FViT
from .fvit_bbox_head import FViTBBoxHead, TextEmbeddingClassifier, geometric_ensemble
from .fvit_roi_head import FViTRoIHead
from .mmdet2_converter import convert_fvit_mmdet2_state_dict
from .norm_rpn_head import NormRPNHead

__all__ = [
    'FViT', 'FViTRoIHead', 'FViTBBoxHead', 'TextEmbeddingClassifier', 'geometric_ensemble',
    'DetectorClassCheckHook', 'convert_fvit_mmdet2_state_dict', 'NormRPNHead'
]
