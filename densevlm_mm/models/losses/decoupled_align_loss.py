"""Decoupled region-language alignment loss of DenseVLM (paper Eqs. 3–5, Table 2; spec §3)."""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevlm_mm.registry import MODELS
from densevlm_mm.utils.checks import check_choice, check_number

from ..retrieval import class_logits, refuse_retrieval_settings, retrieve_regions

# Which classes enter the softmax of a region retrieved as (thing, stuff), paper Table 2.
MODES: Dict[str, Tuple[str, str]] = {
    'all': ('all', 'all'),
    'fully_decoupled': ('thing', 'stuff'),
    'thing_all': ('all', 'stuff'),
    'densevlm': ('thing', 'all'),
}


@MODELS.register_module()
class DecoupledAlignLoss(nn.Module):
    """KL(teacher ‖ student) over the class subset chosen by each region's retrieved group.

    Regions whose teacher confidence (max softmax prob over all C classes) is not above ``theta``
    are dropped (region denoising). A kept region retrieved as class c is a *thing* region when
    ``is_thing[c]``; its teacher and student logits are restricted to the subset that ``mode``
    assigns to its group and re-softmaxed there.

    The temperature τ and the text normalisation are not arguments of the loss: in training they
    come with the P-VLM's retrieval (:meth:`from_retrieval`, configured on
    :class:`RegionRetriever`); a standalone call (:meth:`forward`) takes them as arguments.

    Args:
        mode: ``'densevlm'`` (thing→thing, stuff→all; paper default), ``'all'``,
            ``'fully_decoupled'`` (thing→thing, stuff→stuff) or ``'thing_all'`` (thing→all,
            stuff→stuff).
        theta: confidence threshold in [0, 1] (strict ``>``; 1 keeps nothing).
        reduction: ``'reference'`` = mean over thing regions + mean over stuff regions (spec
            §3.2); ``'mean'`` = one mean over all kept regions.
        loss_weight: multiplier of ``loss_align``, >= 0.
    """

    def __init__(self, mode: str = 'densevlm', theta: float = 0.3, reduction: str = 'reference',
                 loss_weight: float = 1.0, **kwargs) -> None:
        super().__init__()
        owner = type(self).__name__
        refuse_retrieval_settings(owner, kwargs)
        self.mode = check_choice(mode, 'mode', owner, list(MODES))
        self.reduction = check_choice(reduction, 'reduction', owner, ['reference', 'mean'])
        self.theta = check_number(theta, 'theta', owner, low=0, high=1, example=0.3)
        self.loss_weight = check_number(loss_weight, 'loss_weight', owner, low=0, example=1.0)

    def forward(self, student_feats: Tensor, teacher_feats: Tensor, student_text: Tensor,
                teacher_text: Tensor, is_thing: Tensor, tau: float = 0.01,
                normalize_text: bool = True) -> Dict[str, Tensor]:
        """Standalone call: retrieve with the teacher, then :meth:`from_retrieval`.

        Args:
            student_feats: ``[K, Ds]`` student region features.
            teacher_feats: ``[K, Dt]`` teacher (P-VLM) region features.
            student_text / teacher_text: ``[C, Ds]`` / ``[C, Dt]`` class embeddings, same order.
            is_thing: ``[C]`` bool, the thing/stuff split of the classes.
            tau / normalize_text: as :class:`RegionRetriever`'s.

        Returns:
            ``loss_align`` (scalar with grad), ``num_kept``, ``num_thing``, ``num_stuff``.
        """
        owner = f'{type(self).__name__}.forward'
        tau = check_number(tau, 'tau', owner, low=0, low_open=True, example=0.01)
        self._check(student_feats, teacher_feats, student_text, teacher_text, is_thing)
        # The teacher is a target: no gradient flows into it.
        retrieval = retrieve_regions(teacher_feats.detach(), teacher_text.detach(),
                                     is_thing.to(student_feats.device), tau, normalize_text)
        return self.from_retrieval(student_feats, student_text, retrieval)

    def from_retrieval(self, student_feats: Tensor, student_text: Tensor,
                       retrieval: Dict) -> Dict[str, Tensor]:
        """The loss given the P-VLM's retrieval of the same regions.

        Args:
            student_feats: ``[K, Ds]`` student region features.
            student_text: ``[C, Ds]`` student class embeddings (rows as the retrieval's classes).
            retrieval: output of :class:`RegionRetriever` (or :func:`retrieve_regions`): ``logits``
                ``[K, C]``, ``conf``/``labels`` ``[K]``, ``class_is_thing`` ``[C]``, ``tau``,
                ``normalize_text``.
        """
        t_logits, conf, label = retrieval['logits'], retrieval['conf'], retrieval['labels']
        is_thing = retrieval['class_is_thing']
        if student_feats.shape[0] != t_logits.shape[0] or student_text.shape[0] != \
                t_logits.shape[1]:
            raise ValueError(f'{student_feats.shape[0]} student regions and '
                             f'{student_text.shape[0]} student classes, but the retrieval holds '
                             f'{t_logits.shape[0]} regions x {t_logits.shape[1]} classes; the '
                             'head and the retriever must share the regions and the vocabulary')
        s_logits = class_logits(student_feats, student_text, retrieval['tau'],
                                retrieval['normalize_text'])

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
        return F.kl_div(student_logits.log_softmax(dim=-1), teacher_logits.log_softmax(dim=-1),
                        reduction='none', log_target=True).sum(dim=-1)

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

    def extra_repr(self) -> str:
        return (f'mode={self.mode!r}, theta={self.theta}, reduction={self.reduction!r}, '
                f'loss_weight={self.loss_weight}')
