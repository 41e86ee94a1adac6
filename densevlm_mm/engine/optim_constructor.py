"""Optimizer construction that reports frozen parameters once instead of once per tensor."""
import logging

from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from densevlm_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS


class _CountFrozen(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if 'is skipped since its requires_grad=False' in record.getMessage():
            self.count += 1
            return False
        return True


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FrozenAwareOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor (``paramwise_cfg`` included), with the per-tensor warnings
    about frozen parameters (the whole P-VLM, the locked parts of the student) folded into one
    summary line."""

    def __call__(self, model):
        logger = MMLogger.get_current_instance()
        counter = _CountFrozen()
        logger.addFilter(counter)
        try:
            wrapper = super().__call__(model)
        finally:
            logger.removeFilter(counter)
        if counter.count:
            print_log(f'{counter.count} frozen parameter tensors are not optimised',
                      logger='current')
        return wrapper
