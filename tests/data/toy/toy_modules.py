"""A toy model, dataset and metric for the command-line tool tests (``tests/tools``).

Imported by ``toy_config.py`` through ``custom_imports`` (the tests put this folder on
``PYTHONPATH``). The names are prefixed with ``Toy`` so they cannot collide with real modules of the
``densevlm_mm`` scope.
"""
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.dataset import BaseDataset
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from torch import nn

from densevlm_mm.registry import DATASETS, METRICS, MODELS


@MODELS.register_module()
class ToyLinearModel(BaseModel):
    """``y = W x + b`` trained with a mean squared error.

    ``inputs`` is a batch of ``(in_features,)`` vectors and ``data_samples`` the matching targets
    (both stacked by ``pseudo_collate`` into lists, or by ``default_collate`` into tensors).
    """

    def __init__(self, in_features: int = 4, out_features: int = 1, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        x = _stack(inputs).to(self.linear.weight.device)
        out = self.linear(x)
        if mode == 'tensor':
            return out
        if mode == 'loss':
            target = _stack(data_samples).to(out.device).view_as(out)
            loss = nn.functional.mse_loss(out.float(), target.float())
            return {'loss': loss}
        if mode == 'predict':
            target = None if data_samples is None else _stack(data_samples).view_as(out)
            return [
                dict(pred=out[i].detach().float(),
                     gt=None if target is None else target[i].float())
                for i in range(out.shape[0])
            ]
        raise ValueError(f'unknown mode {mode!r}; expected "tensor", "loss" or "predict"')


def _stack(items) -> torch.Tensor:
    if isinstance(items, torch.Tensor):
        return items.float()
    return torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in items])


@DATASETS.register_module()
class ToyRegressionDataset(BaseDataset):
    """``num_samples`` vectors with a fixed linear target, generated in memory (no files)."""

    METAINFO = dict(task='toy regression')

    def __init__(self, num_samples: int = 16, in_features: int = 4, seed: int = 0, **kwargs):
        self.num_samples = num_samples
        self.in_features = in_features
        self.seed = seed
        kwargs.setdefault('serialize_data', False)
        super().__init__(ann_file='', **kwargs)

    def load_data_list(self) -> List[Dict]:
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.num_samples, self.in_features, generator=gen)
        weight = torch.arange(1, self.in_features + 1, dtype=torch.float32)
        y = x @ weight + 0.5
        return [dict(inputs=x[i], data_samples=y[i:i + 1]) for i in range(self.num_samples)]

    def prepare_data(self, idx: int) -> Dict:
        # only the model's arguments (BaseDataset.get_data_info adds `sample_idx`)
        info = self.get_data_info(idx)
        return dict(inputs=info['inputs'], data_samples=info['data_samples'])


@METRICS.register_module()
class ToyMAEMetric(BaseMetric):
    """Mean absolute error of the predictions, reported as ``toy/mae``."""

    default_prefix = 'toy'

    def __init__(self, collect_device: str = 'cpu', prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append(float((sample['pred'] - sample['gt']).abs().mean()))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        return dict(mae=sum(results) / max(len(results), 1))
