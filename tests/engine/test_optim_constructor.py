"""The optimizer constructor logs one summary line, not one line per parameter tensor."""
import logging

import torch
from mmengine.logging import MMLogger
from torch import nn

from densevlm_mm.engine.optim_constructor import FrozenAwareOptimWrapperConstructor


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)  # what the console shows
        self.messages = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))
        self.teacher = nn.Linear(4, 4)
        self.teacher.requires_grad_(False)
        self.backbone[0].requires_grad_(False)


def _build(paramwise_cfg):
    logger = MMLogger.get_instance(f'optim_summary_{id(paramwise_cfg)}', log_level='INFO')
    records = _Records()
    logger.addHandler(records)
    try:
        wrapper = FrozenAwareOptimWrapperConstructor(
            dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.1)),
            paramwise_cfg)(_Model())
    finally:
        logger.removeHandler(records)
    return wrapper, records.messages


def test_one_summary_line_no_per_parameter_lines():
    wrapper, messages = _build(dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                                    flat_decay_mult=0.0))
    assert not any('paramwise_options' in m or 'is skipped since' in m for m in messages)
    summary = [m for m in messages if m.startswith('optimizer ')]
    assert len(summary) == 1 and len(messages) == 1, messages
    line = summary[0]
    # trained: backbone[1] (LayerNorm weight, bias) + backbone[2] (weight, bias) = 4 tensors
    assert 'trains 4 tensors' in line and f'({8 + 8 + 24 + 3:,} values)' in line
    assert 'of backbone in 2 groups' in line
    assert 'weight_decay=0.1: 1 tensors' in line and 'weight_decay=0: 3 tensors' in line
    # frozen: backbone[0] (2) and the teacher (2)
    assert 'frozen: 4 tensors (backbone: 2, teacher: 2)' in line
    assert sum(len(g['params']) for g in wrapper.optimizer.param_groups) == 4


def test_summary_without_paramwise_cfg():
    wrapper, messages = _build(None)
    assert len(messages) == 1 and 'in 1 group ' in messages[0], messages
    # mmengine hands all parameters to the optimizer here; frozen ones are not counted as trained
    assert 'trains 4 tensors' in messages[0] and 'frozen: 4 tensors' in messages[0]
    assert torch.is_tensor(wrapper.optimizer.param_groups[0]['params'][0])
