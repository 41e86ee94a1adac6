"""The head of the RegionCLIP-style baseline: noun embeddings + the region-noun loss."""
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from densevlm_mm.registry import MODELS
from densevlm_mm.text_embeddings import load_text_embeddings
from densevlm_mm.utils.checks import check_number


@MODELS.register_module()
class RegionCLIPHead(BaseModule):
    """Holds the (frozen, L2-normalised) noun embeddings and computes the region-noun loss.

    Args:
        noun_embeddings: ``[N, D]`` noun embeddings made with the *student's* text tower (``.pt``
            from ``tools/text_embeddings.py`` or a bare ``.npy``), rows in the order of the pseudo
            labels.
        loss: loss config, ``dict(type='RegionCLIPLoss', num_sampled_classes=100)`` by default.
        logit_scale: the fixed CLIP temperature multiplier, > 0 (the reference uses the clamped,
            detached ``logit_scale.exp()`` ≈ 100).
    """

    def __init__(self, noun_embeddings: str, loss: Optional[dict] = None,
                 logit_scale: float = 100.0, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.logit_scale = check_number(logit_scale, 'logit_scale', type(self).__name__, low=0,
                                        low_open=True, example=100.0)
        self.loss_module = MODELS.build(
            loss if loss is not None else dict(type='RegionCLIPLoss', num_sampled_classes=100))
        if str(noun_embeddings).endswith('.npy'):
            nouns = torch.from_numpy(np.load(noun_embeddings)).float()
        else:
            nouns = load_text_embeddings(noun_embeddings).embeddings.float()
        if nouns.ndim != 2:
            raise ValueError(f'{noun_embeddings!r}: noun embeddings must be [N, D], got '
                             f'{tuple(nouns.shape)}')
        self.noun_embeddings_file = noun_embeddings
        self.register_buffer('nouns', F.normalize(nouns, dim=-1), persistent=False)

    @property
    def embed_dim(self) -> int:
        return self.nouns.shape[1]

    def loss(self, region_feats: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        """
        Args:
            region_feats: ``[K, D]`` student region features.
            labels: ``[K]`` pseudo label (noun index) of each region.
        """
        if labels.numel() and int(labels.max()) >= self.nouns.shape[0]:
            raise ValueError(f'pseudo label {int(labels.max())} is out of range for '
                             f'{self.nouns.shape[0]} noun embeddings')
        return self.loss_module(region_feats, labels, self.nouns, self.logit_scale)
