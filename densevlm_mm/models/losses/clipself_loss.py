"""CLIPSelf's self-distillation loss (the ``clipself`` baseline, spec §4.1)."""
from typing import Dict

import torch.nn.functional as F
from torch import Tensor, nn

from densevlm_mm.registry import MODELS
from densevlm_mm.utils.checks import check_number


@MODELS.register_module()
class CLIPSelfLoss(nn.Module):
    """``(1 − mean_k cos(s_k, t_k)) · weight``.

    ``s_k`` is the student's dense feature pooled in region k; ``t_k`` the frozen teacher's global
    embedding of the image crop of region k. The teacher side gets no gradient.

    Args:
        weight: loss multiplier, >= 0 (the reference's ``--cosine-weight``, 1.0).
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = check_number(weight, 'weight', type(self).__name__, low=0, example=1.0)

    def forward(self, student_feats: Tensor, teacher_feats: Tensor) -> Dict[str, Tensor]:
        """
        Args:
            student_feats: ``[K, D]`` region features of the student (any norm).
            teacher_feats: ``[K, D]`` crop embeddings of the teacher (any norm).

        Returns:
            ``{'loss_cosine': scalar}``; zero (with a graph to the student) when ``K == 0``.
        """
        if student_feats.shape != teacher_feats.shape:
            raise ValueError(f'CLIPSelfLoss: student {tuple(student_feats.shape)} and teacher '
                             f'{tuple(teacher_feats.shape)} features differ in shape')
        if student_feats.shape[0] == 0:
            return {'loss_cosine': student_feats.float().sum() * 0.0}
        student = F.normalize(student_feats.float(), dim=-1)
        teacher = F.normalize(teacher_feats.detach().float(), dim=-1)
        cos = (student * teacher).sum(dim=-1)
        return {'loss_cosine': (1.0 - cos.mean()) * self.weight}

    def extra_repr(self) -> str:
        return f'weight={self.weight}'
