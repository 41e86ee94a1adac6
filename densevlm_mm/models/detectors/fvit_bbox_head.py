"""F-ViT box head: a class-agnostic ``ConvFCBBoxHead`` whose classifier is the class text embeddings.

Training: ``cls_score = T_det · normalize(ReLU(fc(x))) · E`` over ``C + 1`` columns (classes +
background), softmax cross-entropy with the novel columns removed from the softmax and the
per-class weights ``1`` (base) / ``0`` (novel) / ``bg_weight`` (background) (spec §8.2).
Test: the geometric ensemble of the detector's and the VLM's region probabilities,
``p_c = s_c^(1-λ_c) · v_c^λ_c`` with ``λ = α`` for base classes and background and ``λ = β`` for
novel ones (:func:`geometric_ensemble`); the result is used as probabilities as is — no second
softmax, no renormalisation (mmdet 3.3's ``_predict_by_feat_single`` would apply one).
"""
import logging
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmdet.models.layers import multiclass_nms
from mmdet.models.roi_heads.bbox_heads import ConvFCBBoxHead
from mmdet.models.utils import empty_instances
from mmdet.structures.bbox import get_box_tensor, scale_boxes
from mmengine.config import ConfigDict
from mmengine.logging import print_log
from mmengine.structures import InstanceData
from torch import Tensor, nn

from densevlm_mm.registry import MODELS
from densevlm_mm.text_embeddings import BACKGROUND_NAME, load_text_embeddings
from densevlm_mm.vocabulary import check_same_classes

BACKGROUND = BACKGROUND_NAME
BACKGROUND_MODES = ('embedding', 'zero', 'learned')
ClassList = Union[str, Sequence[str]]


def _class_list(source: Optional[ClassList]) -> Optional[List[str]]:
    if source is None:
        return None
    from densevlm_mm.datasets.ov_detection import read_class_list
    return read_class_list(source)


def geometric_ensemble(det_probs: Tensor, vlm_probs: Tensor, novel_mask: Tensor, alpha: float,
                       beta: float) -> Tensor:
    """``det^(1-λ) · vlm^λ`` per column, ``λ = β`` on ``novel_mask`` columns and ``α`` elsewhere.

    Args:
        det_probs / vlm_probs: ``[N, C+1]`` probabilities.
        novel_mask: ``[C+1]`` bool.

    Returns:
        ``[N, C+1]`` (not renormalised, as the reference).
    """
    lam = torch.where(novel_mask.to(det_probs.device),
                      det_probs.new_tensor(beta), det_probs.new_tensor(alpha))
    return det_probs.pow(1 - lam) * vlm_probs.pow(lam)


def check_class_names(expected: Optional[List[str]], names: List[str], path: str) -> None:
    """Raise ``ValueError`` naming the first difference between the expected classes and a file's."""
    check_same_classes(names, expected, 'the file', 'the detector classes',
                       "generate the file for the dataset's class list with "
                       'tools/text_embeddings.py.', where=repr(path))


def check_embedding_model(classifier: 'TextEmbeddingClassifier', model_name: Optional[str],
                          where: str = 'this F-ViT') -> None:
    """Refuse an embedding file made with another CLIP model than the detector's backbone.

    Rows of another text tower live in another embedding space: even with the same dimension,
    every class score would be wrong. Files without a recorded model (``'unknown'``) are accepted
    with a log line.

    Raises:
        ValueError: naming the file, the model it was made with, the backbone's model and the
            command that writes the right file.
    """
    made = classifier.embedding_model
    path = classifier.text_embeddings
    if model_name is None or made == model_name:
        return
    if made in ('unknown', 'unknown (.npy)', None):
        print_log(f'{path!r} does not record the CLIP model that made it; it is used with '
                  f'{model_name!r} unchecked', logger='current', level=logging.WARNING)
        return
    raise ValueError(
        f'{path!r} was made with the text tower of {made!r}, but {where} has the {model_name!r} '
        'image tower: rows of another CLIP model live in another embedding space, so every class '
        f'score would be wrong. Make the file for {model_name!r}: `python tools/text_embeddings.py '
        f'{model_name} CLIP_CHECKPOINT {classifier.vocabulary or "VOCABULARY"} {path}` '
        f'(CLIP_CHECKPOINT: the {model_name} release holding the text tower; a DenseVLM student '
        'keeps the text tower of the CLIP it started from).')


@MODELS.register_module()
class TextEmbeddingClassifier(nn.Module):
    """Cosine classifier on fixed text embeddings, the ``fc_cls`` of :class:`FViTBBoxHead`.

    ``logits = T · normalize(x) · E`` with ``E`` ``[D, C+1]``: the L2-normalised class rows of the
    embedding file plus the background column.

    Args:
        in_features: ``D`` (the head's ``fc_out_channels`` = the CLIP joint dim).
        out_features: ``C + 1`` (set by ``ConvFCBBoxHead`` from ``num_classes``).
        text_embeddings: file from ``tools/text_embeddings.py``.
        class_names: expected class order (list / JSON / bundled name); checked against the file.
        background: the background column.

            * ``'embedding'`` (default; CLIPSelf's F-ViT, ``learn_bg=False``): the file's
              ``background`` row (the word "background" through the class rows' templates and
              normalisation), fixed. A file without the row is refused with the fix.
            * ``'zero'``: a fixed zero column (background logit 0 whatever the feature).
            * ``'learned'`` (CLIPSelf's ``learn_bg=True``): a learned vector, re-normalised when
              used, initialised to the file's background row (files without one: the normalised
              negative mean of the class rows, logged).
        temperature: initial value of the learnable ``T_det`` (reference 50).
        learn_temperature: ``False`` keeps ``T_det`` fixed.

    Files whose class list itself holds a class named ``background`` (written before the file
    format had the ``background`` entry) give that row for ``'embedding'``.
    """

    def __init__(self, in_features: int, out_features: int, text_embeddings: str,
                 class_names: Optional[ClassList] = None, background: str = 'embedding',
                 temperature: float = 50.0, learn_temperature: bool = True) -> None:
        super().__init__()
        if background not in BACKGROUND_MODES:
            raise ValueError(f"background must be 'embedding', 'zero' or 'learned', got "
                             f'{background!r}')
        # mmdet's BBoxHead builds ``fc_cls`` once with its own input size before ConvFCBBoxHead
        # rebuilds it with ``cls_last_dim``: the dimension is checked by FViTBBoxHead afterwards.
        te = load_text_embeddings(text_embeddings)
        self.in_features = in_features
        self.text_embeddings = text_embeddings
        self.embedding_model = te.model_name
        self.vocabulary = class_names if isinstance(class_names, str) else None
        names = list(te.class_names)
        emb = F.normalize(te.embeddings.float(), dim=-1)
        row = None if te.background is None else F.normalize(te.background.float(), dim=0)[None]
        if BACKGROUND in names:  # the row as a class of an older file
            if background != 'embedding':
                raise ValueError(f"{text_embeddings!r} has a '{BACKGROUND}' class; with background="
                                 f"{background!r} the background column is made here. Use "
                                 "background='embedding' or a file without it.")
            i = names.index(BACKGROUND)
            row = emb[i:i + 1]
            emb = torch.cat([emb[:i], emb[i + 1:]])
            names.pop(i)
        if background == 'embedding' and row is None:
            raise ValueError(
                f"{text_embeddings!r} has no background row (written before "
                "tools/text_embeddings.py added one), but background='embedding' (CLIPSelf "
                "F-ViT's fixed text column for 'background', the F-ViT configs' default) needs it. "
                'Regenerate the file, which adds the row: `python tools/text_embeddings.py '
                f'{te.model_name} CHECKPOINT {self.vocabulary or "VOCABULARY"} '
                f"{text_embeddings}`; or set model.roi_head.bbox_head.background='zero' (a fixed "
                "zero column) or 'learned'.")
        check_class_names(_class_list(class_names), names, text_embeddings)
        if len(names) + 1 != out_features:
            raise ValueError(f'{text_embeddings!r} has {len(names)} classes but the box head has '
                             f'num_classes={out_features - 1}; set num_classes={len(names)}.')
        self.class_names = names
        self.background = background
        self.register_buffer('class_embeddings', emb.t().contiguous())  # [D, C]
        if background == 'learned':
            if row is None:
                row = F.normalize(-emb.mean(0, keepdim=True), dim=-1)
                print_log(f"{text_embeddings!r} has no background row: background='learned' "
                          'starts from the normalised negative mean of the class rows',
                          logger='current', level=logging.INFO)
            self.bg_embedding = nn.Parameter(row.t().contiguous().clone())  # [D, 1]
        elif background == 'zero':
            self.register_buffer('bg_embedding', emb.new_zeros(emb.shape[1], 1))
        else:
            self.register_buffer('bg_embedding', row.t().contiguous())
        t = torch.tensor(float(temperature))
        if learn_temperature:
            self.temperature = nn.Parameter(t)
        else:
            self.register_buffer('temperature', t)

    @property
    def embeddings(self) -> Tensor:
        """``[D, C+1]`` columns: classes, then background (re-normalised when learned)."""
        bg = F.normalize(self.bg_embedding, dim=0) if self.background == 'learned' \
            else self.bg_embedding
        return torch.cat([self.class_embeddings, bg], dim=1)

    def set_classes(self, names: Sequence[str], embeddings: Tensor) -> None:
        """Replace the class rows by ``embeddings [C, D]`` of ``names`` (L2-normalised here);
        the background column and the temperature stay."""
        emb = F.normalize(torch.as_tensor(embeddings).float(), dim=-1)
        if emb.ndim != 2 or emb.shape[0] != len(names) or \
                emb.shape[1] != self.class_embeddings.shape[0]:
            raise ValueError(f'{len(names)} class names need embeddings [{len(names)}, '
                             f'{self.class_embeddings.shape[0]}], got {tuple(emb.shape)}')
        self.class_embeddings = emb.t().contiguous().to(self.class_embeddings.device)
        self.class_names = list(names)
        self.out_features = len(names) + 1

    def cosine(self, x: Tensor) -> Tensor:
        """``normalize(x) · E`` ``[N, C+1]`` without temperature."""
        return F.normalize(x, dim=-1) @ self.embeddings.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``[N, D]`` → logits ``[N, C+1]``."""
        return self.cosine(x) * self.temperature.to(x.dtype)


@MODELS.register_module()
class FViTBBoxHead(ConvFCBBoxHead):
    """F-ViT box head (spec §8.2) on mmdet's ``ConvFCBBoxHead``.

    Args:
        text_embeddings: class embedding file (rows = ``num_classes`` classes, dataset order).
        class_names: expected class order, checked against the file before training.
        base_classes: base class names (list / JSON / bundled name, e.g. ``'ovcoco_48_base'``);
            every other class is novel. ``None``: all classes are base.
        bg_weight: cross-entropy weight of background targets (OV-COCO 0.6, OV-LVIS 0.9).
        background / temperature / learn_temperature: see :class:`TextEmbeddingClassifier`.
        vlm_temperature: ``T_vlm`` of the VLM region scores (75 OV-COCO, 50 OV-LVIS).
        alpha / beta: ensemble exponents for base (and background) / novel classes.
        cls_relu: ReLU after the classification FC before normalisation (the reference keeps it,
            marked FIXME; ``False`` removes it).
        **kwargs: ``ConvFCBBoxHead`` arguments (``loss_cls`` should be softmax CE; its
            ``class_weight`` is filled here from the split unless given).
    """

    def __init__(self, *args, text_embeddings: str, class_names: Optional[ClassList] = None,
                 base_classes: Optional[ClassList] = None, bg_weight: float = 1.0,
                 background: str = 'embedding', temperature: float = 50.0,
                 learn_temperature: bool = True, vlm_temperature: float = 75.0,
                 alpha: float = 0.1, beta: float = 0.8, cls_relu: bool = True,
                 loss_cls: Optional[dict] = None, **kwargs) -> None:
        kwargs['cls_predictor_cfg'] = dict(
            type='densevlm_mm.TextEmbeddingClassifier', text_embeddings=text_embeddings,
            class_names=class_names, background=background, temperature=temperature,
            learn_temperature=learn_temperature)
        num_classes = kwargs.get('num_classes', 80)
        names = [n for n in load_text_embeddings(text_embeddings).class_names if n != BACKGROUND]
        check_class_names(_class_list(class_names), names, text_embeddings)
        base = _class_list(base_classes)
        if base is None:
            base = list(names)
        unknown = [n for n in base if n not in names]
        if unknown:
            raise ValueError(f'base_classes {unknown[:5]} are not classes of {text_embeddings!r}')
        train_mask = torch.tensor([n in base for n in names] + [True])
        if len(names) != num_classes:
            raise ValueError(f'{text_embeddings!r} has {len(names)} classes but the box head has '
                             f'num_classes={num_classes}; set num_classes={len(names)}.')
        loss_cls = dict(loss_cls or dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False,
                                         loss_weight=1.0))
        if loss_cls.get('use_sigmoid', False):
            raise ValueError('FViTBBoxHead needs a softmax loss_cls (use_sigmoid=False)')
        if loss_cls.get('class_weight') is None:
            loss_cls['class_weight'] = [float(m) for m in train_mask[:-1]] + [float(bg_weight)]
        elif len(loss_cls['class_weight']) != num_classes + 1:
            raise ValueError(f'loss_cls.class_weight has {len(loss_cls["class_weight"])} '
                             f'entries; expected num_classes + 1 = {num_classes + 1}')
        kwargs['loss_cls'] = loss_cls
        super().__init__(*args, **kwargs)
        if self.fc_cls.class_embeddings.shape[0] != self.cls_last_dim:
            raise ValueError(f'{text_embeddings!r} holds {self.fc_cls.class_embeddings.shape[0]}-d '
                             f'embeddings but the classification branch gives {self.cls_last_dim}-d '
                             'features; set fc_out_channels to the CLIP embedding dim of the file.')
        self.register_buffer('train_mask', train_mask, persistent=False)  # base + bg columns
        self.vlm_temperature = float(vlm_temperature)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.cls_relu = cls_relu

    @property
    def class_names(self) -> List[str]:
        return self.fc_cls.class_names

    def set_vocabulary(self, names: Sequence[str], embeddings: Tensor) -> None:
        """Classify into ``names`` (rows ``embeddings [C, D]`` from the text tower that made the
        training classes' rows) from now on, for inference. Names the detector was trained on as
        base classes keep the base exponent ``alpha`` of the ensemble, all others get the novel
        ``beta``; the background column stays."""
        base = {n for n, m in zip(self.class_names, self.train_mask[:-1].tolist()) if m}
        self.fc_cls.set_classes(names, embeddings)
        self.num_classes = len(names)
        self.train_mask = torch.tensor([n in base for n in names] + [True],
                                       device=self.train_mask.device)

    @property
    def novel_mask(self) -> Tensor:
        """``[C+1]`` bool, novel class columns (background counts as base, as the reference)."""
        return ~self.train_mask

    def forward(self, x: Tensor) -> tuple:
        """RoI features ``[N, C_in, 7, 7]`` → ``(cls_score [N, C+1] logits, bbox_pred [N, 4])``."""
        for conv in self.shared_convs:
            x = conv(x)
        if self.num_shared_fcs > 0:
            if self.with_avg_pool:
                x = self.avg_pool(x)
            x = x.flatten(1)
            for fc in self.shared_fcs:
                x = self.relu(fc(x))
        x_cls, x_reg = x, x
        for conv in self.cls_convs:
            x_cls = conv(x_cls)
        if x_cls.dim() > 2:
            x_cls = (self.avg_pool(x_cls) if self.with_avg_pool else x_cls).flatten(1)
        for i, fc in enumerate(self.cls_fcs):
            x_cls = fc(x_cls)
            if self.cls_relu or i < len(self.cls_fcs) - 1:
                x_cls = self.relu(x_cls)
        for conv in self.reg_convs:
            x_reg = conv(x_reg)
        if x_reg.dim() > 2:
            x_reg = (self.avg_pool(x_reg) if self.with_avg_pool else x_reg).flatten(1)
        for fc in self.reg_fcs:
            x_reg = self.relu(fc(x_reg))
        cls_score = self.fc_cls(x_cls)
        bbox_pred = self.fc_reg(x_reg) if self.with_reg else None
        return cls_score, bbox_pred

    # ------------------------------------------------------------------------------ training
    def loss(self, cls_score: Tensor, bbox_pred: Tensor, rois: Tensor, labels: Tensor,
             label_weights: Tensor, bbox_targets: Tensor, bbox_weights: Tensor,
             reduction_override: Optional[str] = None) -> dict:
        """mmdet's box loss with the novel columns removed from the softmax (logit −1e4)."""
        if cls_score is not None and cls_score.numel() > 0:
            bad = ~self.train_mask[labels]
            if bool(bad.any()):
                names = sorted({self.class_names[i] for i in labels[bad].tolist()})
                raise ValueError(f'training targets contain novel classes {names[:5]}; filter them '
                                 'in the dataset (OVCocoDataset / OVLVISDataset filter_novel=True).')
            cls_score = cls_score.masked_fill(~self.train_mask, -1e4)
        return super().loss(cls_score, bbox_pred, rois, labels, label_weights, bbox_targets,
                            bbox_weights, reduction_override)

    # ------------------------------------------------------------------------------- testing
    def region_probs(self, cls_score: Tensor, vlm_feats: Optional[Tensor]) -> Tensor:
        """Test-time class probabilities ``[N, C+1]``: ``softmax(cls_score)``, ensembled with
        ``softmax(T_vlm · normalize(vlm_feats) · E)`` when VLM RoI features ``[N, D]`` are given."""
        det = F.softmax(cls_score.float(), dim=-1)
        if vlm_feats is None:
            return det
        vlm = F.softmax(self.vlm_temperature * self.fc_cls.cosine(vlm_feats.float()), dim=-1)
        return geometric_ensemble(det, vlm, self.novel_mask, self.alpha, self.beta)

    def _predict_by_feat_single(self, roi: Tensor, cls_score: Tensor, bbox_pred: Tensor,
                                img_meta: dict, rescale: bool = False,
                                rcnn_test_cfg: Optional[ConfigDict] = None) -> InstanceData:
        """As mmdet's, but ``cls_score`` already holds probabilities (:meth:`region_probs`, called
        by :class:`FViTRoIHead`): no softmax here."""
        results = InstanceData()
        if roi.shape[0] == 0:
            return empty_instances([img_meta], roi.device, task_type='bbox',
                                   instance_results=[results], box_type=self.predict_box_type,
                                   use_box_type=False, num_classes=self.num_classes,
                                   score_per_cls=rcnn_test_cfg is None)[0]
        if cls_score.min() < 0 or cls_score.max() > 1 + 1e-4:
            raise ValueError('FViTBBoxHead expects class probabilities at prediction (its RoI head '
                             'applies region_probs); use it with FViTRoIHead.')
        scores = cls_score
        img_shape = img_meta['img_shape']
        num_rois = roi.size(0)
        if bbox_pred is not None:
            reps = 1 if self.reg_class_agnostic else self.num_classes
            roi = roi.repeat_interleave(reps, dim=0)
            bbox_pred = bbox_pred.view(-1, self.bbox_coder.encode_size)
            bboxes = self.bbox_coder.decode(roi[..., 1:], bbox_pred, max_shape=img_shape)
        else:
            bboxes = roi[:, 1:].clone()
            if img_shape is not None:  # (mmdet's ``bboxes[:, [0, 2]].clamp_`` clamps a copy)
                bboxes[:, 0::2] = bboxes[:, 0::2].clamp(min=0, max=img_shape[1])
                bboxes[:, 1::2] = bboxes[:, 1::2].clamp(min=0, max=img_shape[0])
        if rescale and bboxes.size(0) > 0:
            bboxes = scale_boxes(bboxes, [1 / s for s in img_meta['scale_factor']])
        bboxes = get_box_tensor(bboxes)
        box_dim = bboxes.size(-1)
        bboxes = bboxes.view(num_rois, -1)
        if rcnn_test_cfg is None:
            results.bboxes = bboxes
            results.scores = scores
        else:
            det_bboxes, det_labels = multiclass_nms(bboxes, scores, rcnn_test_cfg.score_thr,
                                                    rcnn_test_cfg.nms, rcnn_test_cfg.max_per_img,
                                                    box_dim=box_dim)
            results.bboxes = det_bboxes[:, :-1]
            results.scores = det_bboxes[:, -1]
            results.labels = det_labels
        return results
