"""Training algorithms (mmpretrain self-supervisors). Importing this pulls in mmpretrain.models."""
from .baselines import CLIPSelf, RegionCLIP
from .densevlm import DenseVLM

__all__ = ['DenseVLM', 'CLIPSelf', 'RegionCLIP']
