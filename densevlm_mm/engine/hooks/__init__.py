"""Training hooks: skipped-image reporting and weight-space ensembling."""
from .skipped_images_hook import SkippedImagesHook
from .weight_ensemble_hook import WeightEnsembleHook

__all__ = ['SkippedImagesHook', 'WeightEnsembleHook']
