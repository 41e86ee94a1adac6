import math

import pytest
import torch
from mmengine.optim.scheduler import LinearLR

from densevlm_mm.engine.schedulers import CosineAfterWarmupLR


def test_warmup_then_cosine_matches_reference_formula():
    lr, warmup, epochs, epoch_len = 1e-3, 10, 3, 20
    total = epochs * epoch_len
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = [LinearLR(opt, start_factor=1e-3, by_epoch=False, begin=0, end=warmup),
             CosineAfterWarmupLR.build_iter_from_epoch(opt, warmup_iters=warmup, eta_min=0.0,
                                                       begin=0, end=epochs, by_epoch=True,
                                                       epoch_length=epoch_len)]
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]['lr'])
        opt.step()
        for s in sched:
            s.step()
    assert seen[0] == pytest.approx(lr * 1e-3)
    for step in range(warmup, total):
        expected = 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) * lr
        assert seen[step] == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_bad_schedule_raises():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match='warm-up'):
        CosineAfterWarmupLR.build_iter_from_epoch(opt, warmup_iters=100, begin=0, end=1,
                                                  by_epoch=True, epoch_length=10)
