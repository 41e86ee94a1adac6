"""Decoupled region-language alignment loss of DenseVLM (paper Eqs. 1–5, Table 2; spec §3)."""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevlm_mm.registry import MODELS

# Which classes enter the softmax of a region retrieved as (thing, stuff), paper Table 2.
MODES: Dict[str, Tuple[str, str]] = {
    'all': ('all', 'all'),
    'fully_decoupled': ('thing', 'stuff'),
    'thing_all': ('all', 'stuff'),
    'densevlm': ('thing', 'all'),
}


def retrieve(region_feats: Tensor, text: Tensor, tau: float = 0.01,
             normalize_text: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """Open-vocabulary retrieval of region categories.

    Args:
        region_feats: ``[K, D]`` region features (any norm; L2-normalised here).
        text: ``[C, D]`` class embeddings (L2-normalised here when ``normalize_text``).
        tau: softmax temperature of the cosine similarities.

    Returns:
        logits ``[K, C]`` (= cos / τ), confidence ``[K]`` (max softmax prob), label ``[K]``.
    """
    feats = F.normalize(region_feats.float(), dim=-1)
    text = text.float()
    if normalize_text:
        text = F.normalize(text, dim=-1)
    logits = feats @ text.t() / tau
    conf, label = logits.softmax(dim=-1).max(dim=-1)
    return logits, conf, label


@MODELS.register_module()
class DecoupledAlignLoss(nn.Module):
    """KL(teacher ‖ student) over the class subset chosen by each region's retrieved group.

    Regions whose teacher confidence (max softmax prob over all C classes) is not above ``theta``
    are dropped (region denoising). A kept region retrieved as class c is a *thing* region when
    ``is_thing[c]``; its teacher and student logits are restricted to the subset that ``mode``
    assigns to its group and re-softmaxed there.

    Args:
        mode: ``'densevlm'`` (thing→thing, stuff→all; paper default), ``'all'``,
            ``'fully_decoupled'`` (thing→thing, stuff→stuff) or ``'thing_all'`` (thing→all,
            stuff→stuff).
        tau: temperature (0.01 = the reference's scale 100).
        theta: confidence threshold (strict ``>``).
        reduction: ``'reference'`` = mean over thing regions + mean over stuff regions (spec
            §3.2); ``'mean'`` = one mean over all kept regions.
        normalize_text: L2-normalise class rows; ``False`` reproduces the reference's
            un-normalised 316-class embeddings (spec §10.2).
        loss_weight: multiplier of ``loss_align``.
    """

    def __init__(self, mode: str = 'densevlm', tau: float = 0.01, theta: float = 0.3,
                 reduction: str = 'reference', normalize_text: bool = True,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f'mode must be one of {sorted(MODES)}, got {mode!r}')
        if reduction not in ('reference', 'mean'):
            raise ValueError(f"reduction must be 'reference' or 'mean', got {reduction!r}")
        if tau <= 0:
            raise ValueError(f'tau must be positive, got {tau}')
        self.mode, self.tau, self.theta = mode, tau, theta
        self.reduction, self.normalize_text, self.loss_weight = reduction, normalize_text, loss_weight

    def forward(self, student_feats: Tensor, teacher_feats: Tensor, student_text: Tensor,
                teacher_text: Tensor, is_thing: Tensor) -> Dict[str, Tensor]:
        """
        Args:
            student_feats: ``[K, Ds]`` student region features.
            teacher_feats: ``[K, Dt]`` teacher (P-VLM) region features.
            student_text / teacher_text: ``[C, Ds]`` / ``[C, Dt]`` class embeddings, same order.
            is_thing: ``[C]`` bool, the thing/stuff split of the classes.

        Returns:
            ``loss_align`` (scalar with grad), ``num_kept``, ``num_thing``, ``num_stuff``.
        """
        self._check(student_feats, teacher_feats, student_text, teacher_text, is_thing)
        is_thing = is_thing.to(device=student_feats.device, dtype=torch.bool)
        # The teacher is a target: no gradient flows into it.
        t_logits, conf, label = retrieve(teacher_feats.detach(), teacher_text.detach(), self.tau,
                                         self.normalize_text)
        s_feats = F.normalize(student_feats.float(), dim=-1)
        s_text = student_text.float()
        if self.normalize_text:
            s_text = F.normalize(s_text, dim=-1)
        s_logits = s_feats @ s_text.t() / self.tau

        keep = conf > self.theta
        region_thing = is_thing[label] & keep
        region_stuff = ~is_thing[label] & keep
        thing_cols, stuff_cols = self._columns(is_thing)
        # A zero that keeps the graph: the loss is never NaN and DDP sees every parameter used.
        zero = s_logits.sum() * 0.0
        per_group = []
        for rows, cols in ((region_thing, thing_cols), (region_stuff, stuff_cols)):
            if rows.any() and cols.any():
                per_group.append(self._kl(t_logits[rows][:, cols], s_logits[rows][:, cols]))
            else:
                per_group.append(zero.reshape(1)[:0])
        if self.reduction == 'reference':
            loss = zero + sum(g.mean() for g in per_group if g.numel())
        else:
            all_kl = torch.cat(per_group)
            loss = zero + (all_kl.mean() if all_kl.numel() else 0.0)
        return dict(loss_align=loss * self.loss_weight,
                    num_kept=keep.sum().float(),
                    num_thing=region_thing.sum().float(),
                    num_stuff=region_stuff.sum().float())

    def _columns(self, is_thing: Tensor) -> Tuple[Tensor, Tensor]:
        """Class masks ``[C]`` of the softmax of thing regions and of stuff regions."""
        sets = dict(all=torch.ones_like(is_thing), thing=is_thing, stuff=~is_thing)
        thing_set, stuff_set = MODES[self.mode]
        return sets[thing_set], sets[stuff_set]

    @staticmethod
    def _kl(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
        """Per-region KL(softmax(t) ‖ softmax(s)), ``[K]``."""
        log_p = teacher_logits.log_softmax(dim=-1)
        log_q = student_logits.log_softmax(dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum(dim=-1)

    @staticmethod
    def _check(student_feats: Tensor, teacher_feats: Tensor, student_text: Tensor,
               teacher_text: Tensor, is_thing: Tensor) -> None:
        if student_feats.ndim != 2 or teacher_feats.ndim != 2:
            raise ValueError('student_feats and teacher_feats must be [K, D], got '
                             f'{tuple(student_feats.shape)} and {tuple(teacher_feats.shape)}')
        if student_feats.shape[0] != teacher_feats.shape[0]:
            raise ValueError(f'{student_feats.shape[0]} student regions but '
                             f'{teacher_feats.shape[0]} teacher regions')
        if student_text.shape[1] != student_feats.shape[1]:
            raise ValueError(f'student text embeddings are {student_text.shape[1]}-d but the '
                             f'student features are {student_feats.shape[1]}-d; generate them '
                             'with the student model')
        if teacher_text.shape[1] != teacher_feats.shape[1]:
            raise ValueError(f'teacher text embeddings are {teacher_text.shape[1]}-d but the '
                             f'teacher features are {teacher_feats.shape[1]}-d; generate them '
                             'with the teacher (P-VLM) model')
        if student_text.shape[0] != teacher_text.shape[0] or is_thing.numel() != \
                student_text.shape[0]:
            raise ValueError(f'class counts differ: student text {student_text.shape[0]}, '
                             f'teacher text {teacher_text.shape[0]}, is_thing {is_thing.numel()}; '
                             'both embedding files must come from the same vocabulary')
