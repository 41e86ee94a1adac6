"""Publish the training epoch and seed to the dataloader workers (exact resume)."""
from mmengine.hooks import Hook

from densevlm_mm.datasets.data_epoch import set_data_epoch
from densevlm_mm.registry import HOOKS


@HOOKS.register_module()
class DataEpochHook(Hook):
    """Before every training epoch, share ``(runner.epoch, runner.seed)`` with the workers.

    The pipeline's random choices (the grid of ``SampleGridRegions``) are a function of (seed,
    epoch, sample index) once published (:mod:`densevlm_mm.datasets.data_epoch`), so a run
    interrupted and resumed with ``--resume`` ends with the weights of an uninterrupted one.
    ``tools/train.py`` and the embedded demo register it.
    """
    priority = 'VERY_HIGH'

    def before_train_epoch(self, runner) -> None:
        set_data_epoch(runner.epoch, runner.seed)
