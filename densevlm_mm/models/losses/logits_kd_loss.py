"""Plain logits distillation over all classes (the "logits KD" baseline of paper Tables 1 / 11)."""
from typing import Dict

import torch.nn.functional as F
from torch import Tensor, nn

from densevlm_mm.registry import MODELS


@MODELS.register_module()
class LogitsKDLoss(nn.Module):
    """``KL(softmax(t̂·Tᵀ/τ) ‖ softmax(ŝ·Sᵀ/τ))`` averaged over regions, times ``weight``.

    One softmax over all classes: no confidence threshold and no thing/stuff decoupling (compare
    :class:`DecoupledAlignLoss`). Region features are L2-normalised; the teacher side (features and
    both class-embedding tables) gets no gradient.

    Args:
        tau: softmax temperature (0.01 = logit scale 100).
        weight: loss multiplier.
        normalize_text: L2-normalise the class rows (``False`` keeps them as given, like the
            reference's un-normalised embeddings, spec §10.2).
    """

    def __init__(self, tau: float = 0.01, weight: float = 1.0, normalize_text: bool = True) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f'LogitsKDLoss: tau must be > 0, got {tau}')
        self.tau = float(tau)
        self.weight = float(weight)
        self.normalize_text = normalize_text

    def forward(self, student_feats: Tensor, teacher_feats: Tensor, student_text: Tensor,
                teacher_text: Tensor) -> Dict[str, Tensor]:
        """
        Args:
            student_feats: ``[K, Ds]`` student region features.
            teacher_feats: ``[K, Dt]`` teacher (P-VLM) region features.
            student_text: ``[C, Ds]`` class embeddings in the student's space.
            teacher_text: ``[C, Dt]`` class embeddings in the teacher's space.

        Returns:
            ``{'loss_logits_kd': scalar}``; zero (with a graph to the student) when ``K == 0``.
        """
        if student_feats.shape[0] != teacher_feats.shape[0]:
            raise ValueError(f'LogitsKDLoss: {student_feats.shape[0]} student and '
                             f'{teacher_feats.shape[0]} teacher regions')
        if student_text.shape[0] != teacher_text.shape[0]:
            raise ValueError(f'LogitsKDLoss: {student_text.shape[0]} student and '
                             f'{teacher_text.shape[0]} teacher classes')
        if student_feats.shape[0] == 0:
            return {'loss_logits_kd': student_feats.float().sum() * 0.0}
        s_text, t_text = student_text.detach().float(), teacher_text.detach().float()
        if self.normalize_text:
            s_text, t_text = F.normalize(s_text, dim=-1), F.normalize(t_text, dim=-1)
        student = F.normalize(student_feats.float(), dim=-1)
        teacher = F.normalize(teacher_feats.detach().float(), dim=-1)
        log_q = F.log_softmax(student @ s_text.t() / self.tau, dim=-1)
        log_p = F.log_softmax(teacher @ t_text.t() / self.tau, dim=-1)
        kl = F.kl_div(log_q, log_p, reduction='batchmean', log_target=True)
        return {'loss_logits_kd': kl * self.weight}

    def extra_repr(self) -> str:
        return f'tau={self.tau}, weight={self.weight}, normalize_text={self.normalize_text}'
