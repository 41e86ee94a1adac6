"""Training algorithms (mmpretrain self-supervisors). Importing this pulls in mmpretrain.models."""
from .densevlm import DenseVLM

__all__ = ['DenseVLM']
