"""Plain logits distillation over all classes (the "logits KD" baseline of paper Tables 1 / 11)."""
from typing import Dict

import torch.nn.functional as F
from torch import Tensor, nn

from densevlm_mm.registry import MODELS
from densevlm_mm.utils.checks import check_number

from ..retrieval import class_logits, refuse_retrieval_settings, retrieve_regions


@MODELS.register_module()
class LogitsKDLoss(nn.Module):
    """``KL(softmax(t̂·Tᵀ/τ) ‖ softmax(ŝ·Sᵀ/τ))`` averaged over regions, times ``weight``.

    One softmax over all classes: no confidence threshold and no thing/stuff decoupling (compare
    :class:`DecoupledAlignLoss`). Region features are L2-normalised; the teacher side (features and
    both class-embedding tables) gets no gradient. τ and the text normalisation come with the
    P-VLM's retrieval (:meth:`from_retrieval`) or, standalone, as arguments of :meth:`forward`.

    Args:
        weight: loss multiplier, >= 0.
    """

    def __init__(self, weight: float = 1.0, **kwargs) -> None:
        super().__init__()
        refuse_retrieval_settings(type(self).__name__, kwargs)
        self.weight = check_number(weight, 'weight', type(self).__name__, low=0, example=1.0)

    def forward(self, student_feats: Tensor, teacher_feats: Tensor, student_text: Tensor,
                teacher_text: Tensor, tau: float = 0.01,
                normalize_text: bool = True) -> Dict[str, Tensor]:
        """
        Args:
            student_feats: ``[K, Ds]`` student region features.
            teacher_feats: ``[K, Dt]`` teacher (P-VLM) region features.
            student_text: ``[C, Ds]`` class embeddings in the student's space.
            teacher_text: ``[C, Dt]`` class embeddings in the teacher's space.
            tau / normalize_text: as :class:`RegionRetriever`'s.

        Returns:
            ``{'loss_logits_kd': scalar}``; zero (with a graph to the student) when ``K == 0``.
        """
        tau = check_number(tau, 'tau', f'{type(self).__name__}.forward', low=0, low_open=True,
                           example=0.01)
        if student_feats.shape[0] != teacher_feats.shape[0]:
            raise ValueError(f'LogitsKDLoss: {student_feats.shape[0]} student and '
                             f'{teacher_feats.shape[0]} teacher regions')
        if student_text.shape[0] != teacher_text.shape[0]:
            raise ValueError(f'LogitsKDLoss: {student_text.shape[0]} student and '
                             f'{teacher_text.shape[0]} teacher classes')
        retrieval = retrieve_regions(teacher_feats.detach(), teacher_text.detach(),
                                     teacher_text.new_zeros(teacher_text.shape[0], dtype=bool),
                                     tau, normalize_text)
        return self.from_retrieval(student_feats, student_text, retrieval)

    def from_retrieval(self, student_feats: Tensor, student_text: Tensor,
                       retrieval: Dict) -> Dict[str, Tensor]:
        """The loss given the P-VLM's retrieval (``logits [K, C]``, ``tau``,
        ``normalize_text``)."""
        t_logits = retrieval['logits']
        if student_feats.shape[0] != t_logits.shape[0] or student_text.shape[0] != \
                t_logits.shape[1]:
            raise ValueError(f'LogitsKDLoss: {student_feats.shape[0]} student regions and '
                             f'{student_text.shape[0]} student classes, but the retrieval holds '
                             f'{t_logits.shape[0]} regions x {t_logits.shape[1]} classes')
        if student_feats.shape[0] == 0:
            return {'loss_logits_kd': student_feats.float().sum() * 0.0}
        s_logits = class_logits(student_feats, student_text.detach(), retrieval['tau'],
                                retrieval['normalize_text'])
        log_q = F.log_softmax(s_logits, dim=-1)
        log_p = F.log_softmax(t_logits.detach(), dim=-1)
        kl = F.kl_div(log_q, log_p, reduction='batchmean', log_target=True)
        return {'loss_logits_kd': kl * self.weight}

    def extra_repr(self) -> str:
        return f'weight={self.weight}'
