"""densevlm_mm: DenseVLM region-language alignment of CLIP image encoders for OpenMMLab 2.0.

Importing the package is cheap: subpackages (``models``, ``datasets``, ``evaluation``, ``engine``,
``visualization``) are imported on demand, by the registries' ``locations`` or by
:func:`densevlm_mm.utils.register_all_modules`. The core never imports mmdet, mmseg or mmcv ops.
"""
__version__ = '0.1.0'
