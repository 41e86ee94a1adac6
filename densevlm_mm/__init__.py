"""densevlm_mm: DenseVLM region-language alignment of CLIP image encoders for OpenMMLab 2.0.

Importing the package is cheap: subpackages (``models``, ``datasets``, ``evaluation``, ``engine``,
``visualization``) are imported on demand, by the registries' ``locations`` or by
:func:`densevlm_mm.utils.register_all_modules`. The core never imports mmdet, mmseg or mmcv ops.
"""
__version__ = '0.1.0'


def _allow_checkpoint_meta() -> None:
    # mmengine 0.10.7 calls torch.load without weights_only, which torch>=2.6 makes True: let it
    # read the (harmless) message-hub objects mmengine itself writes, so resuming works from any
    # entry point that imports this package (ours, mmpretrain's tools/train.py with
    # custom_imports=['densevlm_mm']).
    from .utils.checkpoint import allow_mmengine_checkpoint_meta
    allow_mmengine_checkpoint_meta()


_allow_checkpoint_meta()
