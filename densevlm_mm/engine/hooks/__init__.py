"""Training and evaluation hooks: class-list checks, skipped-image reporting, weight ensembling,
the data epoch for exact resume."""
from .data_epoch_hook import DataEpochHook
from .eval_class_check_hook import EvalClassCheckHook, check_class_names
from .skipped_images_hook import SkippedImagesHook
from .weight_ensemble_hook import WeightEnsembleHook

__all__ = ['DataEpochHook', 'EvalClassCheckHook', 'check_class_names', 'SkippedImagesHook', 'WeightEnsembleHook']
