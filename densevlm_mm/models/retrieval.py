"""The frozen P-VLM that retrieves a category for every region (paper §3.2, Eqs. 1–2; spec §3.2).

Retrieval is configured in one place, :class:`RegionRetriever` (``tau``, ``normalize_text``), and
computed once per step: its output carries the teacher logits, probabilities, labels and
confidences *and* the settings, so the losses score the student in the same space
(:func:`class_logits` with the retrieval's ``tau`` / ``normalize_text``) without retrieving again.
"""
import contextlib
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevlm_mm.registry import MODELS
from densevlm_mm.text_embeddings import load_text_embeddings
from densevlm_mm.utils.checks import check_bool, check_choice, check_number
from densevlm_mm.vocabulary import Vocabulary

from .frozen_teacher import FrozenTeacher

_DTYPES = dict(fp32=torch.float32, bf16=torch.bfloat16, fp16=torch.float16)

#: the settings a retrieval carries to the losses; configured on the retriever only
RETRIEVAL_SETTINGS = ('tau', 'normalize_text')


def class_logits(region_feats: Tensor, text: Tensor, tau: float = 0.01,
                 normalize_text: bool = True) -> Tensor:
    """Cosine similarity / τ of regions and classes (paper Eqs. 1–2).

    Args:
        region_feats: ``[K, D]`` region features (any norm; L2-normalised here).
        text: ``[C, D]`` class embeddings (L2-normalised here when ``normalize_text``; ``False``
            keeps the reference's un-normalised rows, spec §10.2).
        tau: softmax temperature (0.01 = the reference's scale 100).

    Returns:
        ``[K, C]`` float32 logits.
    """
    feats = F.normalize(region_feats.float(), dim=-1)
    text = text.float()
    if normalize_text:
        text = F.normalize(text, dim=-1)
    return feats @ text.t() / tau


def retrieve(region_feats: Tensor, text: Tensor, tau: float = 0.01,
             normalize_text: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """Open-vocabulary retrieval of region categories.

    Returns:
        logits ``[K, C]`` (:func:`class_logits`), confidence ``[K]`` (max softmax probability),
        label ``[K]``.
    """
    logits = class_logits(region_feats, text, tau, normalize_text)
    conf, label = logits.softmax(dim=-1).max(dim=-1)
    return logits, conf, label


def retrieve_regions(region_feats: Tensor, text: Tensor, class_is_thing: Tensor,
                     tau: float = 0.01, normalize_text: bool = True) -> Dict:
    """The retrieval a loss consumes (see :meth:`RegionRetriever.forward` for the keys)."""
    out = retrieval_from_logits(class_logits(region_feats, text, tau, normalize_text),
                                class_is_thing, tau, normalize_text)
    out['text'] = text
    return out


def retrieval_from_logits(logits: Tensor, class_is_thing: Tensor, tau: float = 0.01,
                          normalize_text: bool = True) -> Dict:
    """The retrieval of regions whose teacher logits ``[K, C]`` are known (e.g. read from the
    region cache): the keys of :meth:`RegionRetriever.forward` except ``feats`` and ``text``."""
    probs = logits.softmax(dim=-1)
    conf, labels = probs.max(dim=-1)
    class_is_thing = class_is_thing.to(device=logits.device, dtype=torch.bool)
    return dict(logits=logits, probs=probs, conf=conf, labels=labels,
                region_is_thing=class_is_thing[labels], class_is_thing=class_is_thing, tau=tau,
                normalize_text=normalize_text)


def thing_split(is_thing: Tensor, reference_thing_count: Optional[int], owner: str) -> Tensor:
    """The classes' thing/stuff split: the file's ``is_thing``, or the reference's off-by-one
    (classes with index ``< reference_thing_count - 1`` are things, spec §10.1)."""
    if reference_thing_count is None:
        return is_thing.clone()
    reference_thing_count = check_number(
        reference_thing_count, 'reference_thing_count', owner, low=1, high=len(is_thing),
        integer=True, example=len(is_thing))
    return torch.arange(len(is_thing)) < reference_thing_count - 1


def refuse_retrieval_settings(owner: str, kwargs: dict) -> None:
    """Raise when a loss config sets what the retriever owns (or any unknown argument)."""
    moved = [k for k in kwargs if k in RETRIEVAL_SETTINGS]
    if moved:
        raise ValueError(
            f'{owner}: {", ".join(moved)} is configured once, on the P-VLM retriever '
            f'(model.target_generator.{moved[0]}), whose retrieval carries it to the loss; remove '
            f'it from the loss config. A standalone call takes it as an argument: loss('
            f'student_feats, teacher_feats, student_text, teacher_text, ..., {moved[0]}=...).')
    if kwargs:
        raise TypeError(f'{owner} got unexpected arguments {sorted(kwargs)}')


@MODELS.register_module()
class RegionRetriever(FrozenTeacher):
    """A frozen CLIP image encoder + its class embeddings, returning region targets.

    The P-VLM never trains: its parameters have ``requires_grad=False``, it stays in eval mode,
    runs under ``no_grad`` (optionally in bf16/fp16 autocast), is left out of DDP (see
    :class:`DenseVLM`) and out of checkpoints (it is rebuilt from its own file).

    Args:
        backbone: config (or instance) of the P-VLM :class:`DenseVLMBackbone`.
        text_embeddings: file from ``tools/text_embeddings.py`` made with the P-VLM's text tower.
        vocabulary: optional vocabulary to check the file against.
        tau: retrieval temperature, > 0; the losses use the same one for the student.
        precision: ``'fp32'``, ``'bf16'`` or ``'fp16'`` autocast for the teacher forward.
        normalize_text: L2-normalise the class rows of teacher *and* student (``False``
            reproduces the reference's un-normalised 316-class embeddings, spec §10.2).
        reference_thing_count: reproduce the reference's off-by-one thing split: classes with
            index ``< reference_thing_count - 1`` are things (spec §10.1; 204 for the 316 list).
            ``None`` (default) uses the explicit per-class ``is_thing`` of the file.
        inference_mode: run the teacher forward under ``torch.inference_mode`` instead of
            ``no_grad`` (no version counters / view tracking); the region features are cloned
            out of it, so the results are the same tensors as without (fast path, issue 14).
    """

    def __init__(self, backbone: Union[dict, nn.Module], text_embeddings: str,
                 vocabulary: Optional[Union[str, Vocabulary]] = None, tau: float = 0.01,
                 precision: str = 'fp32', normalize_text: bool = True,
                 reference_thing_count: Optional[int] = None,
                 init_cfg: Optional[dict] = None, inference_mode: bool = False) -> None:
        owner = type(self).__name__
        check_bool(inference_mode, 'inference_mode', owner)
        check_choice(precision, 'precision', owner, sorted(_DTYPES))
        tau = check_number(tau, 'tau', owner, low=0, low_open=True, example=0.01)
        check_bool(normalize_text, 'normalize_text', owner)
        super().__init__(backbone, init_cfg=init_cfg)
        te = load_text_embeddings(text_embeddings, vocabulary=vocabulary,
                                  embed_dim=self.backbone.embed_dim,
                                  expected_model=getattr(self.backbone, 'model_name', None))
        self.class_names: List[str] = list(te.class_names)
        is_thing = thing_split(te.is_thing, reference_thing_count, owner)
        self.register_buffer('text', te.embeddings.float(), persistent=False)
        self.register_buffer('class_is_thing', is_thing, persistent=False)
        self.tau, self.precision, self.normalize_text = tau, precision, normalize_text
        self.inference_mode = inference_mode

    def forward(self, images: Tensor, boxes: List[Tensor]) -> Dict:
        """Teacher targets of the regions: the one retrieval of the step.

        Args:
            images: ``[B, 3, H, W]`` normalised images.
            boxes: per image ``[K_i, 4]`` xyxy in input pixels.

        Returns:
            ``feats [K, Dt]`` (pooled, not normalised), ``logits [K, C]`` (cos / τ),
            ``probs [K, C]``, ``conf [K]``, ``labels [K]``, ``region_is_thing [K]``,
            ``text [C, Dt]``, ``class_is_thing [C]``, and the settings ``tau`` and
            ``normalize_text``.
        """
        enabled = self.precision != 'fp32'
        # inference_mode(False) would switch grad mode back on inside no_grad: enter it only
        # when asked for
        fast = torch.inference_mode() if self.inference_mode else contextlib.nullcontext()
        with torch.no_grad():  # a block, not a decorator: mutmut mutates it
            with fast, torch.autocast(images.device.type, dtype=_DTYPES[self.precision],
                                      enabled=enabled):
                dense = self.backbone.dense_features(images)
                feats = self.backbone.roi_features(dense, boxes)
            feats = feats.float()
            if self.inference_mode:  # a normal tensor again: the loss may save it for backward
                feats = feats.clone()
            out = retrieve_regions(feats, self.text, self.class_is_thing, self.tau,
                                   self.normalize_text)
        out['feats'] = feats
        return out

    def extra_repr(self) -> str:
        return f'tau={self.tau}, normalize_text={self.normalize_text}, precision={self.precision}'
