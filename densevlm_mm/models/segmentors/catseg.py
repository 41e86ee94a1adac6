"""CAT-Seg (CVPR'24 version) as an mmseg segmentor over :class:`DenseVLMBackbone` (spec §11.2).

``CATSeg`` holds the CLIP image tower (a ``DenseVLMBackbone``: one pass gives the two guidance
layers and the dense joint-space map), the CLIP text tower (:class:`CATSegTextEncoder`, per-template
class embeddings) and the aggregation head (:class:`CATSegHead`). Only the attention query / value
projection weights of both towers are fine-tuned (:func:`enable_qv_finetuning`), plus the head.
Swapping plain CLIP for a DenseVLM student is one line: ``model.backbone.pretrained``.
"""
import logging
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.utils import ConfigType, OptConfigType, OptMultiConfig, OptSampleList, SampleList
from torch import Tensor

from densevlm_mm.registry import MODELS
from .catseg_attention_finetune import enable_qv_finetuning

ClassSpec = Union[str, Sequence[str]]


def resolve_class_names(spec: ClassSpec, what: str) -> List[str]:
    """Class names from a list, a registered dataset type (its ``METAINFO['classes']``, e.g.
    ``'mmseg.COCOStuffDataset'``) or a vocabulary name / JSON file (:func:`load_vocabulary`)."""
    if not isinstance(spec, str):
        names = [str(n) for n in spec]
    else:
        from mmengine.registry import DATASETS as ROOT_DATASETS

        from densevlm_mm.registry import DATASETS
        dataset_cls = None
        for registry in (DATASETS, ROOT_DATASETS):
            try:
                dataset_cls = registry.get(spec)
            except (KeyError, ImportError):
                dataset_cls = None
            if dataset_cls is not None:
                break
        classes = getattr(dataset_cls, 'METAINFO', {}).get('classes') if dataset_cls else None
        if classes:
            names = list(classes)
        else:
            from densevlm_mm.vocabulary import load_vocabulary
            try:
                names = list(load_vocabulary(spec, require_split=False).names)
            except Exception as exc:
                raise ValueError(f'{what}={spec!r} is neither a registered dataset type with '
                                 f'METAINFO classes nor a vocabulary ({exc}); pass a list of '
                                 'class names') from exc
    if not names:
        raise ValueError(f'{what} is empty')
    return names


def _build(cfg: ConfigType) -> torch.nn.Module:
    """Build a sub-module from our registry whatever the config's ``default_scope`` (``mmseg``
    for configs inheriting mmseg dataset bases)."""
    cfg = dict(cfg)
    cfg.setdefault('_scope_', 'densevlm_mm')
    return MODELS.build(cfg)


@MODELS.register_module()
class CATSeg(BaseSegmentor):
    """CAT-Seg: cost aggregation between dense CLIP features and class text embeddings.

    Args:
        backbone: ``DenseVLMBackbone`` config; ``out_indices`` = the two guidance layers
            ((3, 7) for ViT-B/16, (7, 15) for ViT-L/14); ``with_dense`` is set (one pass gives
            both layers and the dense map). ViT / EVA02 families only.
        text_encoder: :class:`CATSegTextEncoder` config (same CLIP model as the backbone).
        decode_head: :class:`CATSegHead` config; ``clip_width``, ``embed_dim`` and ``num_prompts``
            are filled in from the towers when missing (and checked when given).
        train_classes: training class names, dataset type or vocabulary (label id = index).
        test_classes: evaluation classes (default: ``train_classes``); ``'from_dataset'``: taken
            from the evaluation dataset's ``metainfo['classes']`` before validation / testing by
            :class:`EvalClassesFromDatasetHook` (for class lists read from data files, PC-459).
        train_text_embeddings / test_text_embeddings: optional embedding files
            (:mod:`densevlm_mm.text_embeddings` format) replacing the text tower for that split;
            checked against the class names and embedding dimension when the model is built.
            A train file freezes the text tower. Files hold one (ensembled) row per class, so
            ``P = 1``: both splits must then have one template channel.
        finetune: ``'qv'`` (CAT-Seg: attention query/value weights of both towers) or ``'none'``.
        clip_resolution: CLIP input ``(H, W)``; inputs are resized to it bilinearly (384 for
            ViT-B/16, 336 for ViT-L/14); ``None`` keeps the input size.
        ignore_index: label id ignored by the loss.
        ignore_as_negative: see :meth:`CATSegHead.loss_by_logits`.
        test_cfg: ``mode='whole'`` or ``'slide'`` (``crop_size``, ``stride``, ``global_view``:
            also average in the whole image resized to the crop, as CAT-Seg does).
        data_preprocessor: mmseg ``SegDataPreProcessor`` config (CLIP mean/std).
    """

    def __init__(self,
                 backbone: ConfigType,
                 text_encoder: ConfigType,
                 decode_head: ConfigType,
                 train_classes: ClassSpec,
                 test_classes: Optional[ClassSpec] = None,
                 train_text_embeddings: Optional[str] = None,
                 test_text_embeddings: Optional[str] = None,
                 finetune: str = 'qv',
                 clip_resolution: Optional[Sequence[int]] = None,
                 ignore_index: int = 255,
                 ignore_as_negative: bool = True,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        backbone = dict(backbone)
        # the probe runs once, below, after the q/v split (not also at construction)
        backbone.setdefault('freeze_unused', False)
        if not backbone.setdefault('with_dense', True):
            raise ValueError('CAT-Seg needs the backbone\'s dense map: set with_dense=True')
        self.backbone = _build(backbone)
        if self.backbone.family not in ('vit', 'eva02'):
            raise NotImplementedError(f'CAT-Seg needs a ViT image tower, got the '
                                      f'{self.backbone.family} family')
        if len(self.backbone.out_indices) != 2:
            raise ValueError('CAT-Seg backbone needs exactly two guidance layers in out_indices, '
                             f'got {self.backbone.out_indices}')
        self.text_encoder = _build(text_encoder)
        self.train_class_names = resolve_class_names(train_classes, 'train_classes')
        self.test_classes_from_dataset = test_classes == 'from_dataset'
        self.test_class_names: Optional[List[str]] = None
        if not self.test_classes_from_dataset:
            self.test_class_names = resolve_class_names(
                test_classes if test_classes is not None else train_classes, 'test_classes')
        embed_dim = self.backbone.embed_dim
        if self.text_encoder.embed_dim != embed_dim:
            raise ValueError(f'text tower embeds into {self.text_encoder.embed_dim} dims but the '
                             f'image tower into {embed_dim}: use the same CLIP model')
        self._files: Dict[str, str] = {}
        for split, path in (('train', train_text_embeddings), ('test', test_text_embeddings)):
            if path is not None:
                self._files[split] = path
                self.register_buffer(f'{split}_text_file', None, persistent=False)
        self._load_text_file('train', self.train_class_names)
        self._load_text_file('test', self.test_class_names)
        prompts = {s: (1 if s in self._files else self.text_encoder.num_prompts)
                   for s in ('train', 'test')}
        if prompts['train'] != prompts['test']:
            raise ValueError(f'train and test text have {prompts["train"]} vs {prompts["test"]} '
                             'templates per class (an embedding file has 1): use a file for both '
                             'splits or a single-template text encoder')
        decode_head = dict(decode_head)
        for key, value in (('clip_width', self.backbone.num_features), ('embed_dim', embed_dim),
                           ('num_prompts', prompts['train'])):
            if decode_head.setdefault(key, value) != value:
                raise ValueError(f'decode_head.{key}={decode_head[key]} does not match the '
                                 f'CLIP towers ({value})')
        self.decode_head = _build(decode_head)
        self.decode_head.threshold = 0.5  # used by mmseg's postprocess for a single class
        self.align_corners = False
        self.finetune = finetune
        self.trainable_clip_params = self._set_trainable(finetune)
        self.clip_resolution = tuple(clip_resolution) if clip_resolution else None
        self.ignore_index = ignore_index
        self.ignore_as_negative = ignore_as_negative
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg if test_cfg is not None else dict(mode='whole')

    def _set_trainable(self, finetune: str) -> List[str]:
        """Freeze both CLIP towers except the q/v projection weights; return their names."""
        if finetune not in ('qv', 'none'):
            raise ValueError(f"finetune must be 'qv' or 'none', got {finetune!r}")
        self.backbone.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        if finetune == 'none':
            return []
        enable_qv_finetuning(self.backbone.visual, 'image tower')
        # q of the value-only last block never reaches the dense map: let the backbone's probe
        # freeze what neither its maps nor the dense map reach
        self.backbone.freeze_unused_parameters()
        names = [f'backbone.{n}' for n, p in self.backbone.named_parameters() if p.requires_grad]
        if 'train' in self._files:
            print_log('CAT-Seg: training text comes from an embedding file; the text tower stays '
                      'frozen', logger='current', level=logging.INFO)
        else:
            names += [f'text_encoder.clip.{n}'
                      for n in enable_qv_finetuning(self.text_encoder.tower, 'text tower')]
        return names

    def _load_text_file(self, split: str, names: Optional[List[str]]) -> None:
        """Load and check the embedding file of ``split`` against ``names`` and the embed dim."""
        if split not in self._files or names is None:
            return
        from densevlm_mm.text_embeddings import load_text_embeddings
        te = load_text_embeddings(self._files[split], embed_dim=self.backbone.embed_dim,
                                  class_names=names)
        device = next(self.decode_head.parameters()).device if hasattr(
            self, 'decode_head') else 'cpu'
        setattr(self, f'{split}_text_file', te.embeddings[:, None].float().to(device))

    # ------------------------------------------------------------------------------ classes
    @property
    def eval_class_names(self) -> Optional[List[str]]:
        """Evaluation classes (checked against the dataset by ``EvalClassCheckHook``)."""
        return self.test_class_names

    def set_eval_classes(self, names: Sequence[str]) -> None:
        """Set the evaluation classes (``test_classes='from_dataset'``; done by
        ``EvalClassesFromDatasetHook``) and check the test embedding file against them."""
        self.test_class_names = resolve_class_names(list(names), 'evaluation classes')
        self._load_text_file('test', self.test_class_names)

    def set_vocabulary(self, names: Sequence[str]) -> None:
        """Evaluate with classes named at inference time (open vocabulary), encoded by the
        model's own text tower with its templates; a ``test_text_embeddings`` file (rows of its
        own classes) is no longer used.

        Raises:
            ValueError: the head was trained on one text row per class (a training embedding
                file) but the text tower gives ``P > 1`` template rows.
        """
        if self.text_encoder.num_prompts != self.decode_head.num_prompts:
            raise ValueError(
                f'this CAT-Seg head takes {self.decode_head.num_prompts} text row(s) per class '
                f'(trained on an embedding file) but its text tower gives '
                f'{self.text_encoder.num_prompts} (templates of the text_encoder config); '
                'build it with a text encoder of one template to name classes at inference.')
        self.test_class_names = resolve_class_names(list(names), 'vocabulary')
        self.test_classes_from_dataset = False
        if 'test' in self._files:
            del self._files['test']
            self.test_text_file = None

    @property
    def class_names(self) -> List[str]:
        """Classes of the current mode (train / test)."""
        if self.training:
            return self.train_class_names
        if self.test_class_names is None:
            raise RuntimeError("CATSeg(test_classes='from_dataset') has no evaluation classes yet: "
                               "add dict(type='EvalClassesFromDatasetHook') to custom_hooks or "
                               'call set_eval_classes(names)')
        return self.test_class_names

    # ------------------------------------------------------------------------------ features

    def text_features(self) -> Tensor:
        """``[T, P, D]`` class embeddings of the current mode."""
        split = 'train' if self.training else 'test'
        names = self.class_names
        if split in self._files:
            return getattr(self, f'{split}_text_file')
        return self.text_encoder(names)

    def extract_feat(self, inputs: Tensor) -> Dict[str, object]:
        """One CLIP pass: ``dense [B, D, h, w]`` and the two guidance maps ``[B, width, h, w]``."""
        if self.clip_resolution is not None and tuple(inputs.shape[-2:]) != self.clip_resolution:
            inputs = F.interpolate(inputs, size=self.clip_resolution, mode='bilinear',
                                   align_corners=False)
        *layers, dense = self.backbone(inputs)
        return dict(dense=dense, layers=list(layers))

    def encode_decode(self, inputs: Tensor, batch_img_metas: Optional[List[dict]] = None) -> Tensor:
        """Logits ``[B, T, H, W]`` at the input size."""
        feats = self.extract_feat(inputs)
        logits = self.decode_head(feats['dense'], feats['layers'], self.text_features())
        return F.interpolate(logits, size=inputs.shape[-2:], mode='bilinear', align_corners=False)

    # ------------------------------------------------------------------------------- train
    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """BCE over all training classes (``decode.loss_bce``)."""
        gt = torch.stack([s.gt_sem_seg.data[0] for s in data_samples]).long()
        logits = self.encode_decode(inputs)
        if logits.shape[-2:] != gt.shape[-2:]:
            logits = F.interpolate(logits, size=gt.shape[-2:], mode='bilinear',
                                   align_corners=False)
        loss = self.decode_head.loss_by_logits(logits, gt, self.ignore_index,
                                               self.ignore_as_negative)
        return {'decode.loss_bce': loss}

    # ------------------------------------------------------------------------------ test
    def predict(self, inputs: Tensor, data_samples: OptSampleList = None) -> SampleList:
        """Per-class probabilities (sigmoid) resized to the original shape; argmax labels."""
        if data_samples is not None:
            metas = [s.metainfo for s in data_samples]
        else:
            metas = [dict(ori_shape=inputs.shape[2:], img_shape=inputs.shape[2:],
                          pad_shape=inputs.shape[2:], padding_size=[0, 0, 0, 0])] * len(inputs)
        return self.postprocess_result(self.inference(inputs, metas), data_samples)

    def inference(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        mode = self.test_cfg.get('mode', 'whole')
        if mode == 'whole':
            return self.encode_decode(inputs).sigmoid()
        if mode == 'slide':
            return self.slide_inference(inputs)
        raise ValueError(f"test_cfg.mode must be 'whole' or 'slide', got {mode!r}")

    def slide_inference(self, inputs: Tensor) -> Tensor:
        """Mean sigmoid over overlapping crops, averaged with a global view (CAT-Seg test).

        ``test_cfg``: ``crop_size (h, w)``, ``stride (h, w)``, ``global_view`` (default True).
        """
        h_crop, w_crop = self.test_cfg['crop_size']
        h_stride, w_stride = self.test_cfg['stride']
        b, _, h_img, w_img = inputs.shape
        h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
        probs, count = None, inputs.new_zeros((b, 1, h_img, w_img))
        for i in range(h_grids):
            for j in range(w_grids):
                y2, x2 = min(i * h_stride + h_crop, h_img), min(j * w_stride + w_crop, w_img)
                y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
                crop = self.encode_decode(inputs[:, :, y1:y2, x1:x2]).sigmoid()
                if probs is None:
                    probs = inputs.new_zeros((b, crop.shape[1], h_img, w_img))
                probs[:, :, y1:y2, x1:x2] += crop
                count[:, :, y1:y2, x1:x2] += 1
        probs = probs / count
        if self.test_cfg.get('global_view', True):
            small = F.interpolate(inputs, size=(h_crop, w_crop), mode='bilinear',
                                  align_corners=False)
            glob = F.interpolate(self.encode_decode(small).sigmoid(), size=(h_img, w_img),
                                 mode='bilinear', align_corners=False)
            probs = (probs + glob) / 2
        return probs

    def _forward(self, inputs: Tensor, data_samples: OptSampleList = None) -> Tensor:
        """Logits ``[B, T, H, W]`` without post-processing."""
        return self.encode_decode(inputs)
