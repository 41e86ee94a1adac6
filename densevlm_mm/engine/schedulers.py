"""Learning-rate schedule of the reference: linear warm-up, then cosine over the remaining steps."""
from mmengine.optim.scheduler import CosineAnnealingLR
from mmengine.optim.scheduler.param_scheduler import INF

from densevlm_mm.registry import PARAM_SCHEDULERS
from densevlm_mm.utils.checks import check_number


@PARAM_SCHEDULERS.register_module()
class CosineAfterWarmupLR(CosineAnnealingLR):
    """Cosine annealing that starts after ``warmup_iters`` and ends with training.

    Configured in epochs (``by_epoch=True, begin=0, end=max_epochs, convert_to_iter_based=True``)
    so the total number of iterations follows the dataset; the cosine then runs from iteration
    ``warmup_iters`` to the last one, as the reference's
    ``0.5·(1 + cos(π·(step − warmup)/(total − warmup)))·lr`` (spec §5.3). Pair it with a
    ``LinearLR`` over ``[0, warmup_iters)``.
    """

    def __init__(self, optimizer, warmup_iters: int = 0, **kwargs) -> None:
        self.warmup_iters = check_number(warmup_iters, 'warmup_iters', 'CosineAfterWarmupLR',
                                         low=0, integer=True, example=1000)
        super().__init__(optimizer, **kwargs)

    @classmethod
    def build_iter_from_epoch(cls, *args, warmup_iters: int = 0, T_max=None, begin=0, end=INF,
                              by_epoch=True, epoch_length=None, **kwargs):
        warmup_iters = check_number(warmup_iters, 'warmup_iters', 'CosineAfterWarmupLR', low=0,
                                    integer=True, example=1000)
        if not by_epoch or not epoch_length:
            raise ValueError('CosineAfterWarmupLR converts an epoch-based config: set '
                             'by_epoch=True and convert_to_iter_based=True')
        if end == INF:
            raise ValueError('CosineAfterWarmupLR needs `end` (the number of epochs)')
        begin_it = int(begin * epoch_length) + warmup_iters
        end_it = int(end * epoch_length)
        if end_it <= begin_it:
            raise ValueError(f'warm-up ({warmup_iters} iterations) is not shorter than training '
                             f'({end_it} iterations)')
        return cls(*args, warmup_iters=warmup_iters, T_max=end_it - begin_it, begin=begin_it,
                   end=end_it, by_epoch=False, **kwargs)
