"""RegionCLIP-style region–noun contrastive loss (the ``region_clip`` baseline, spec §4.2)."""
from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevlm_mm.registry import MODELS
from densevlm_mm.utils.checks import check_number


@MODELS.register_module()
class RegionCLIPLoss(nn.Module):
    """Binary cross-entropy between regions and a federated sample of noun classes.

    Over the whole batch, the classes that appear in ``labels`` are kept and, while fewer than
    ``num_sampled_classes``, classes that do not appear are added, drawn uniformly without
    replacement (``torch.multinomial``). With the L2-normalised region features ``f`` and nouns
    ``N``, ``logits = logit_scale · f · N[classes]ᵀ`` and the one-hot targets restricted to the
    chosen classes give ``BCEWithLogits`` summed over classes and averaged over regions.

    Args:
        num_sampled_classes: classes per batch (100 in the reference); when more appear, only
            the appeared ones are used.
        weight: loss multiplier, >= 0 (the reference's ``--contrast-weight``, 1.0).
    """

    def __init__(self, num_sampled_classes: int = 100, weight: float = 1.0) -> None:
        super().__init__()
        owner = type(self).__name__
        self.num_sampled_classes = check_number(num_sampled_classes, 'num_sampled_classes', owner,
                                                low=1, integer=True, example=100)
        self.weight = check_number(weight, 'weight', owner, low=0, example=1.0)

    def forward(self,
                region_feats: Tensor,
                labels: Tensor,
                noun_embeddings: Tensor,
                logit_scale: Union[float, Tensor],
                generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """
        Args:
            region_feats: ``[K, D]`` student region features (any norm).
            labels: ``[K]`` noun index of each region, in ``[0, N)``.
            noun_embeddings: ``[N, D]`` noun text embeddings (any norm; no gradient).
            logit_scale: the multiplier of the cosine similarities, i.e. CLIP's
                ``logit_scale.exp()`` (≈100), **not** its logarithm; detached.
            generator: random generator of the class sampling (its device is used for the draw).

        Returns:
            ``{'loss_region_clip': scalar}``; zero (with a graph to the features) when ``K == 0``.
        """
        if region_feats.shape[0] != labels.shape[0]:
            raise ValueError(f'RegionCLIPLoss: {region_feats.shape[0]} regions but '
                             f'{labels.shape[0]} labels')
        if region_feats.shape[0] == 0:
            return {'loss_region_clip': region_feats.float().sum() * 0.0}
        device = region_feats.device
        num_nouns = noun_embeddings.shape[0]
        labels = labels.to(device=device, dtype=torch.long)
        if labels.min() < 0 or labels.max() >= num_nouns:
            raise ValueError(f'RegionCLIPLoss: labels must be in [0, {num_nouns}), got '
                             f'[{labels.min().item()}, {labels.max().item()}]')
        classes = self.sample_classes(labels, num_nouns, generator)
        feats = F.normalize(region_feats.float(), dim=-1)
        nouns = F.normalize(noun_embeddings.detach().float().to(device)[classes], dim=-1)
        scale = torch.as_tensor(logit_scale, dtype=torch.float32).detach().to(device)
        logits = scale * feats @ nouns.t()
        targets = (labels[:, None] == classes[None, :]).float()
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')
        return {'loss_region_clip': loss.sum(dim=1).mean() * self.weight}

    def sample_classes(self, labels: Tensor, num_nouns: int,
                       generator: Optional[torch.Generator] = None) -> Tensor:
        """Appeared classes (sorted) followed by uniformly drawn non-appeared ones."""
        appeared = torch.unique(labels)
        extra = self.num_sampled_classes - appeared.numel()
        if extra <= 0:
            return appeared
        free = torch.ones(num_nouns, dtype=torch.bool, device=labels.device)
        free[appeared] = False
        candidates = free.nonzero().squeeze(1)
        extra = min(extra, candidates.numel())
        if extra == 0:
            return appeared
        draw_device = generator.device if generator is not None else torch.device('cpu')
        weights = torch.ones(candidates.numel(), device=draw_device)
        picked = torch.multinomial(weights, extra, replacement=False, generator=generator)
        return torch.cat([appeared, candidates[picked.to(labels.device)]])

    def extra_repr(self) -> str:
        return f'num_sampled_classes={self.num_sampled_classes}, weight={self.weight}'
