from .densevlm_head import DenseVLMHead

__all__ = ['DenseVLMHead']
