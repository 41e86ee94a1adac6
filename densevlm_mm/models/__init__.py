"""Models of DenseVLM.

The core (backbones, retrieval, losses, head, data preprocessor) imports without
mmdet, mmseg or mmcv ops. :class:`DenseVLM` subclasses mmpretrain's self-supervisor, whose package
imports mmcv ops; it is loaded on first use (``densevlm_mm.models.DenseVLM`` or the registry).
"""
from .backbones import *  # noqa: F401,F403
from .cached_retrieval import CachedRegionRetriever
from .crop_teacher import CropTeacher
from .data_preprocessor import DenseVLMDataPreprocessor
from .heads import CLIPSelfHead, DenseVLMHead, RegionCLIPHead
from .losses import *  # noqa: F401,F403
from .retrieval import RegionRetriever, class_logits, retrieve, retrieve_regions


def __getattr__(name: str):
    if name in ('DenseVLM', 'CLIPSelf', 'RegionCLIP'):
        from . import algorithms
        return getattr(algorithms, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
