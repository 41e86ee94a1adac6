"""Open-vocabulary inference on users' images: model loading, dense label maps, region labels.

``init_model`` builds the image tower (a :class:`DenseVLMBackbone`) and keeps the open_clip text
tower that encodes class names; ``inference_dense`` labels every pixel with the class whose text
embedding is most similar to the dense feature there; ``classify_regions`` labels given boxes or
masks (RoIAlign / mask pooling of the same dense map, spec §1.0).

Images are fitted into a ``S×S`` canvas (longer side ``S``, padded bottom/right, the evaluation
transform :class:`ResizeLongestPad`) and normalised with the CLIP statistics; results are mapped
back to the image's own pixels.
"""
import logging
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from .images import ImageLike, load_image
from .vocabulary_embeddings import VocabularyEmbeddings

DEFAULT_IMAGE_SIZE = 512
#: softmax temperature of region probabilities (τ of the paper's retrieval)
DEFAULT_TAU = 0.01


@dataclass
class OpenVocabModel:
    """An image tower with dense paths plus the text tower of the same CLIP model.

    Attributes:
        backbone: :class:`~densevlm_mm.models.DenseVLMBackbone` (eval mode).
        clip: the open_clip model whose ``encode_text`` embeds class names (its ``visual`` is the
            backbone's tower).
        tokenizer: open_clip tokenizer of ``clip``.
        model_name: open_clip model name.
        text_checkpoint: file the text tower was loaded from (``None``: random init); part of the
            text-embedding cache key.
        image_checkpoint: file the image tower was loaded from.
        image_size: ``S`` of the ``S×S`` input canvas.
        mean / std: per-channel normalisation on the 0..255 scale.
        config: the mmengine config when built from one.
    """
    backbone: nn.Module
    clip: nn.Module
    tokenizer: object
    model_name: str
    text_checkpoint: Optional[str] = None
    image_checkpoint: Optional[str] = None
    image_size: int = DEFAULT_IMAGE_SIZE
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    device: torch.device = field(default_factory=lambda: torch.device('cpu'))
    config: object = None

    @property
    def embed_dim(self) -> int:
        return int(self.backbone.embed_dim)

    @property
    def stride(self) -> int:
        return int(self.backbone.stride)


# ------------------------------------------------------------------------------- loading
def _config_image_size(cfg) -> Optional[int]:
    """``size`` of the first ``ResizeLongestPad`` of the test / val / train pipeline."""
    for loader in ('test_dataloader', 'val_dataloader', 'train_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset') or {}
        for step in dataset.get('pipeline') or []:
            if str(step.get('type', '')).split('.')[-1] == 'ResizeLongestPad':
                size = step.get('size', DEFAULT_IMAGE_SIZE)
                return int(max(size)) if isinstance(size, (list, tuple)) else int(size)
    return None


def _backbone_cfg(cfg, source: str) -> dict:
    from .model_kinds import DOWNSTREAM, config_kind, wrong_loader
    kind = config_kind(cfg)
    if kind in DOWNSTREAM:
        raise wrong_loader(kind, f'{source} (model.type {cfg.model.type})', 'init_model')
    if kind != 'aligned':
        backbone = (cfg.get('model') or {}).get('backbone') or {}
        raise ValueError(
            f'{source}: model.backbone is {backbone.get("type") or "missing"}, not a '
            'DenseVLMBackbone. init_model (the demo modes seg/heatmap/grid/boxes) needs an '
            'alignment or region-classification config (configs/densevlm/, configs/region_cls/, '
            'configs/baselines/); CAT-Seg / SAN configs load with init_segmentor, F-ViT configs '
            'with init_detector (--mode det).')
    return cfg.model.backbone


def _text_tower_error(path: str, kind: Optional[str]) -> Optional[str]:
    """Why the file of ``kind`` cannot give the text tower that encodes class names (or None)."""
    if kind == 'aligned':
        return (f'{path!r} is a training checkpoint: it holds the aligned image tower '
                '("backbone.*") but no text tower to encode class names. Use it with its config: '
                '--config CONFIG --checkpoint CKPT (API: init_model(config, checkpoint)).')
    if kind == 'image_tower':
        return (f'{path!r} holds only an image tower ("visual.*"), no text tower to encode '
                'class names. Pass the full CLIP checkpoint, or a config whose '
                'model.backbone.pretrained is the CLIP checkpoint together with this file as '
                'the checkpoint.')
    return None


def _read(path: str, what: str) -> Tuple[Dict[str, Tensor], Optional[str]]:
    """The unwrapped state dict of ``path`` (read once) and its :func:`checkpoint_kind`;
    checkpoints of downstream models are refused with the loader to use."""
    from densevlm_mm.utils import load_checkpoint_file

    from .model_kinds import DOWNSTREAM, checkpoint_kind, wrong_loader
    state_dict = load_checkpoint_file(path)
    kind = checkpoint_kind(state_dict)
    if kind in DOWNSTREAM:
        raise wrong_loader(kind, f'{what} {path!r}', 'init_model')
    return state_dict, kind


def _clip_with_text(model_name: str, path: str, what: str, model_cfg: Optional[dict] = None):
    """``(clip, tokenizer)`` with both towers from the CLIP checkpoint ``path`` (read once);
    files without a text tower are refused."""
    from densevlm_mm.models.clip_factory import create_clip, load_clip_weights
    state_dict, kind = _read(path, what)
    problem = _text_tower_error(path, kind)
    if problem:
        raise ValueError(f'{what}: {problem}' if what != 'checkpoint' else problem)
    clip, tokenizer = create_clip(model_name, model_cfg=model_cfg)
    load_clip_weights(clip, path, require_text=True, state_dict=state_dict)
    return clip, tokenizer


def _check_text_source(model_name: str, text_ckpt: Optional[str]) -> None:
    """A random text tower is allowed only for the bundled tiny test models
    (``densevlm-tiny-*``): elsewhere its label maps would mean nothing."""
    if text_ckpt is None and not model_name.startswith('densevlm-tiny-'):
        raise ValueError(
            f'{model_name}: no checkpoint for the text tower, which encodes your class names; '
            'randomly initialised, it would give label maps that mean nothing. Pass the CLIP '
            'checkpoint (init_model(model_name, checkpoint), or model.backbone.pretrained of '
            'the config).')


def init_model(config_or_name, checkpoint: Optional[str] = None,
               device: Union[str, torch.device] = 'cpu', image_size: Optional[int] = None,
               cfg_options: Optional[dict] = None) -> OpenVocabModel:
    """Build the model of a config, or a plain open_clip model, for open-vocabulary inference.

    Every checkpoint file is read once.

    Args:
        config_or_name: either a config file of this project (or an mmengine ``Config``) whose
            ``model.backbone`` is a ``DenseVLMBackbone`` — its ``model_name`` and ``pretrained``
            CLIP checkpoint give both towers, like ``tools/test.py`` — or an open_clip model name
            (``EVA02-B-16``, a bundled ``densevlm-tiny-*``, ...). CAT-Seg / SAN configs are refused
            (:func:`init_segmentor` loads them), F-ViT ones too (:func:`init_detector`).
        checkpoint: with a config: the ``epoch_N.pth`` of a training run (its ``backbone.*``
            weights replace the image tower), or a CLIP checkpoint; with a model name: a local
            open_clip / EVA-CLIP / released DenseVLM checkpoint (``None``: random init, allowed
            only for the bundled ``densevlm-tiny-*`` test models). Checkpoints of CAT-Seg, SAN
            or F-ViT are refused with the loader to use: their image tower belongs with their
            own text tower and head.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'`` ...
        image_size: side ``S`` of the input canvas (default: the config's ``ResizeLongestPad``
            size, else 512).
        cfg_options: overrides merged into the config (like ``--cfg-options``).

    Raises:
        FileNotFoundError: config or checkpoint missing.
        ValueError: a config or checkpoint of another kind of model (naming its loader), a
            checkpoint without the text tower where one is needed, no text checkpoint for a
            model that is not a bundled tiny one.
        RuntimeError: a checkpoint whose keys do not fit (strict loading, with the key
            accounting).
    """
    from mmengine.config import Config

    from densevlm_mm.models import DenseVLMBackbone
    from densevlm_mm.models.clip_factory import create_clip
    from densevlm_mm.models.data_preprocessor import CLIP_MEAN, CLIP_STD

    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f'device {device} requested but CUDA is not available here; use '
                           "device='cpu'")
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint file not found: {checkpoint!r}')
    cfg = None
    image_ckpt = None  # a file whose image tower replaces the text checkpoint's
    if isinstance(config_or_name, Config) or (isinstance(config_or_name, str)
                                              and config_or_name.endswith('.py')):
        from .model_kinds import load_config
        cfg, source = load_config(config_or_name, cfg_options)
        bb = _backbone_cfg(cfg, source)
        model_name = bb['model_name']
        text_ckpt = bb.get('pretrained')
        if text_ckpt is not None and not osp.isfile(text_ckpt):
            raise FileNotFoundError(
                f'{source}: model.backbone.pretrained = {text_ckpt!r} does not exist. This CLIP '
                'checkpoint provides the text tower that encodes your class names; put it there '
                '(paths are relative to the current directory) or pass --cfg-options '
                'model.backbone.pretrained=PATH.')
        _check_text_source(model_name, text_ckpt)
        if checkpoint is not None and not (text_ckpt and osp.samefile(checkpoint, text_ckpt)):
            image_ckpt = checkpoint
        if text_ckpt is None:
            clip, tokenizer = create_clip(model_name, model_cfg=bb.get('model_cfg'))
        else:
            clip, tokenizer = _clip_with_text(
                model_name, text_ckpt, f'{source}: model.backbone.pretrained',
                bb.get('model_cfg'))
        pre = (cfg.get('model') or {}).get('data_preprocessor') or {}
        mean, std = tuple(pre.get('mean', CLIP_MEAN)), tuple(pre.get('std', CLIP_STD))
        image_size = image_size or _config_image_size(cfg) or DEFAULT_IMAGE_SIZE
    else:
        if not isinstance(config_or_name, str):
            raise TypeError('config_or_name must be a config path / Config or an open_clip model '
                            f'name, got {type(config_or_name).__name__}')
        model_name, text_ckpt = config_or_name, checkpoint
        _check_text_source(model_name, text_ckpt)
        if checkpoint is None:
            clip, tokenizer = create_clip(model_name)
        else:
            clip, tokenizer = _clip_with_text(model_name, checkpoint, 'checkpoint')
        pp = getattr(clip.visual, 'preprocess_cfg', None) or {}
        mean = tuple(255.0 * v for v in pp.get('mean', [m / 255 for m in CLIP_MEAN]))
        std = tuple(255.0 * v for v in pp.get('std', [s / 255 for s in CLIP_STD]))
        image_size = image_size or DEFAULT_IMAGE_SIZE
    if text_ckpt is None:
        from mmengine.logging import print_log
        print_log(f'{model_name}: a bundled tiny test model with a randomly initialised text '
                  'tower: class names do not mean anything to it', logger='current',
                  level=logging.WARNING)
    backbone = DenseVLMBackbone.from_open_clip(clip, model_name=model_name, freeze_unused=False)
    model = OpenVocabModel(backbone=backbone, clip=clip, tokenizer=tokenizer,
                           model_name=model_name, text_checkpoint=text_ckpt,
                           image_checkpoint=text_ckpt, image_size=int(image_size),
                           mean=mean, std=std, device=device, config=cfg)
    if image_ckpt is not None:
        from densevlm_mm.models.backbones.weights import load_image_tower
        state_dict, _ = _read(image_ckpt, 'checkpoint')
        load_image_tower(model.clip.visual, image_ckpt, model_name=model_name,
                         state_dict=state_dict)
        model.image_checkpoint = image_ckpt
    clip.to(device).eval()
    backbone.to(device).eval()
    return model


# ----------------------------------------------------------------------------- inference
@dataclass
class PreparedImage:
    """An image as the network sees it."""
    image: np.ndarray  # uint8 RGB [H, W, 3], upright
    canvas: np.ndarray  # uint8 RGB [S, S, 3], resized + padded
    inputs: Tensor  # [1, 3, S, S] normalised
    valid_hw: Tuple[int, int]  # resized content inside the canvas
    scale_factor: Tuple[float, float]  # (sx, sy) image px -> canvas px


def prepare_image(model: OpenVocabModel, image: ImageLike) -> PreparedImage:
    """Load, fit into the ``S×S`` canvas (``ResizeLongestPad``), normalise."""
    from densevlm_mm.datasets.transforms import ResizeLongestPad
    rgb = load_image(image)
    sample = ResizeLongestPad(model.image_size, min_valid_side=0)(dict(img=rgb))
    mean = torch.tensor(model.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(model.std, dtype=torch.float32).view(3, 1, 1)
    x = (torch.from_numpy(sample['img']).permute(2, 0, 1).float() - mean) / std
    return PreparedImage(rgb, sample['img'], x[None].to(model.device),
                         tuple(int(v) for v in sample['valid_hw']),
                         tuple(float(v) for v in sample['scale_factor']))


@dataclass
class DenseResult:
    """Per-pixel open-vocabulary labels of one image.

    Attributes:
        label_map: int64 ``[H, W]`` class index per image pixel.
        score_map: float32 ``[H, W]`` cosine similarity of the chosen class.
        similarity: float32 ``[C, h, w]`` cosine similarity of every class at every feature cell
            (the feature grid covers the ``S×S`` canvas; see ``valid_hw``).
        dense: ``[D, h, w]`` dense features (joint space, not normalised).
        prepared: the image, canvas and geometry.
        names / display_names: the vocabulary.
    """
    label_map: np.ndarray
    score_map: np.ndarray
    similarity: Tensor
    dense: Tensor
    prepared: PreparedImage
    names: List[str]
    display_names: List[str]

    def class_areas(self) -> Dict[str, float]:
        """Share of the image per class present, largest first."""
        return class_areas(self.label_map, self.names)

    def draw(self, out_file: Optional[str] = None, scale: float = 1.0, **kwargs) -> np.ndarray:
        """The label map over the image with class names and a legend
        (:func:`~densevlm_mm.visualization.draw_label_map`); RGB ``[H·scale, W·scale, 3]``."""
        from densevlm_mm.visualization import draw_label_map
        return draw_label_map(self.prepared.image, self.label_map, self.display_names,
                              out_file=out_file, scale=scale, **kwargs)


def class_areas(label_map: np.ndarray, names: List[str]) -> Dict[str, float]:
    """``{name: share of the pixels}`` of the classes present, largest first."""
    counts = np.bincount(label_map.reshape(-1), minlength=len(names))
    order = np.argsort(-counts, kind='stable')
    return {names[i]: float(counts[i] / label_map.size) for i in order if counts[i]}


def _text_matrix(model: OpenVocabModel, embeddings) -> Tuple[Tensor, List[str], List[str]]:
    if isinstance(embeddings, VocabularyEmbeddings):
        text, names, shown = embeddings.embeddings, embeddings.names, embeddings.display_names
    else:
        text = torch.as_tensor(embeddings)
        names = [str(i) for i in range(text.shape[0])]
        shown = names
    if text.ndim != 2 or text.shape[1] != model.embed_dim:
        raise ValueError(f'text embeddings must be [C, {model.embed_dim}] for {model.model_name} '
                         f'(embedding dim {model.embed_dim}), got {tuple(text.shape)}; build them '
                         'with build_vocabulary_embeddings(model, ...)')
    return F.normalize(text.float(), dim=-1).to(model.device), list(names), list(shown)


@torch.no_grad()
def dense_similarity(model: OpenVocabModel, prepared: PreparedImage,
                     text: Tensor) -> Tuple[Tensor, Tensor]:
    """``(dense [D, h, w], cosine similarity [C, h, w])`` of one prepared image."""
    dense = model.backbone.dense_features(prepared.inputs)[0].float()
    sim = torch.einsum('cd,dhw->chw', text, F.normalize(dense, dim=0))
    return dense, sim


def _upsample_argmax(sim: Tensor, stride: int, valid_hw: Tuple[int, int],
                     chunk: int = 64) -> Tuple[Tensor, Tensor]:
    """Bilinearly upsample ``[C, h, w]`` to canvas pixels (cell ``i`` spans pixels
    ``[i·stride, (i+1)·stride)``), crop to ``valid_hw`` and take the arg-max over classes in
    chunks of classes (memory ``chunk × S²``). Returns ``(labels, best score)`` ``[nh, nw]``."""
    c, h, w = sim.shape
    nh, nw = valid_hw
    best = torch.full((nh, nw), -float('inf'), device=sim.device)
    label = torch.zeros((nh, nw), dtype=torch.long, device=sim.device)
    for start in range(0, c, chunk):
        part = F.interpolate(sim[None, start:start + chunk], size=(h * stride, w * stride),
                             mode='bilinear', align_corners=False)[0]
        # pixels the stride-s grid does not reach (bottom/right remainder) take the edge cell
        if part.shape[1] < nh or part.shape[2] < nw:
            part = F.pad(part[None], (0, max(0, nw - part.shape[2]), 0,
                                      max(0, nh - part.shape[1])), mode='replicate')[0]
        part = part[:, :nh, :nw]
        score, idx = part.max(dim=0)
        better = score > best
        best = torch.where(better, score, best)
        label = torch.where(better, idx + start, label)
    return label, best


def inference_dense(model: OpenVocabModel, image: ImageLike, embeddings) -> DenseResult:
    """Open-vocabulary label map of one image.

    Every dense-feature cell is compared (cosine) with every class embedding; the similarities
    are bilinearly upsampled to the input canvas, the arg-max is taken per pixel, and the label
    map is resized (nearest) to the image's own size.

    Args:
        model: from :func:`init_model`.
        image: path, array or PIL image (EXIF orientation applied).
        embeddings: :class:`VocabularyEmbeddings` (or a ``[C, D]`` tensor).

    Returns:
        :class:`DenseResult` with ``label_map`` / ``score_map`` of the image's size.
    """
    text, names, shown = _text_matrix(model, embeddings)
    prepared = image if isinstance(image, PreparedImage) else prepare_image(model, image)
    dense, sim = dense_similarity(model, prepared, text)
    label, best = _upsample_argmax(sim, model.stride, prepared.valid_hw)
    h, w = prepared.image.shape[:2]
    if tuple(label.shape) != (h, w):
        label_np = _resize_labels(label.cpu().numpy(), (w, h))
        best = F.interpolate(best[None, None], size=(h, w), mode='bilinear',
                             align_corners=False)[0, 0]
    else:
        label_np = label.cpu().numpy()
    return DenseResult(label_np.astype(np.int64), best.cpu().numpy().astype(np.float32),
                       sim.cpu(), dense.cpu(), prepared, names, shown)


def _resize_labels(labels: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an int label array to ``size = (W, H)`` (PIL mode ``I``)."""
    im = Image.fromarray(labels.astype(np.int32), mode='I').resize(size, Image.NEAREST)
    return np.asarray(im)


@dataclass
class RegionResult:
    """Labels of given regions.

    Attributes:
        labels: int64 ``[K]`` best class per region.
        scores: float32 ``[K]`` cosine similarity of that class.
        probs: float32 ``[K, C]`` softmax of cosine / τ over the vocabulary.
        similarity: float32 ``[K, C]`` cosine similarities.
        names / display_names: the vocabulary.
    """
    labels: np.ndarray
    scores: np.ndarray
    probs: np.ndarray
    similarity: np.ndarray
    names: List[str]
    display_names: List[str]

    @property
    def label_names(self) -> List[str]:
        return [self.names[i] for i in self.labels]


def check_boxes(boxes, image_hw: Tuple[int, int], what: str = 'the image',
                clip: bool = False) -> np.ndarray:
    """Validate (optionally clip) x1,y1,x2,y2 boxes ``[K, 4]`` in the pixels of an image of
    ``(H, W)`` (the backbone's box check, with the image named in the message).

    Raises:
        ValueError: wrong shape, non-finite, negative, outside the image (unless ``clip``),
            inverted or empty; the message names the image and the box.
    """
    from densevlm_mm.models.backbones.dense_vlm_backbone import check_boxes as _check
    arr = torch.as_tensor(np.asarray(boxes, dtype=np.float64))
    if arr.dim() == 1 and arr.numel() == 4:
        arr = arr[None]
    if arr.numel() == 0:
        raise ValueError(f'no boxes given for {what}')
    try:
        arr = _check(arr, image_hw, clip=clip)
    except ValueError as exc:
        raise ValueError(f'{what}: {exc}'.replace('boxes[0]', 'box ')) from None
    return arr.numpy().astype(np.float32)


@torch.no_grad()
def classify_regions(model: OpenVocabModel, image: ImageLike, embeddings,
                     boxes=None, masks=None, tau: float = DEFAULT_TAU,
                     clip_boxes: bool = False) -> RegionResult:
    """Label boxes or masks of one image with the vocabulary.

    Args:
        model: from :func:`init_model`.
        image: path, array or PIL image.
        embeddings: :class:`VocabularyEmbeddings` (or ``[C, D]``).
        boxes: ``[K, 4]`` x1,y1,x2,y2 in image pixels (RoIAlign of the dense map, spec §1.0).
        masks: bool ``[K, H, W]`` of the image's size (mask pooling of the dense map).
        tau: softmax temperature of ``probs``.
        clip_boxes: clip boxes to the image instead of refusing those that leave it.

    Returns:
        :class:`RegionResult`.
    """
    if (boxes is None) == (masks is None):
        raise ValueError('give either boxes or masks')
    text, names, shown = _text_matrix(model, embeddings)
    prepared = image if isinstance(image, PreparedImage) else prepare_image(model, image)
    h, w = prepared.image.shape[:2]
    sx, sy = prepared.scale_factor
    dense = model.backbone.dense_features(prepared.inputs)
    what = 'the image' if not isinstance(image, str) else repr(image)
    if boxes is not None:
        b = torch.from_numpy(check_boxes(boxes, (h, w), what, clip_boxes)).clone()
        b[:, [0, 2]] *= sx
        b[:, [1, 3]] *= sy
        feats = model.backbone.roi_features(dense, [b.to(model.device)])
    else:
        m = np.asarray(masks)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3 or m.shape[1:] != (h, w):
            raise ValueError(f'masks for {what} must be [K, {h}, {w}] (the image size), got '
                             f'{m.shape}')
        empty = [k for k in range(m.shape[0]) if not m[k].any()]
        if empty:
            raise ValueError(f'mask {empty[0]} of {what} is empty')
        from densevlm_mm.datasets.transforms import ResizeLongestPad
        sample = ResizeLongestPad(model.image_size, min_valid_side=0)(
            dict(img=prepared.image, region_masks=m.astype(bool)))
        canvas_masks = torch.from_numpy(sample['region_masks']).to(model.device)
        feats = model.backbone.mask_features(dense, [canvas_masks], in_pixels=True)
    sim = F.normalize(feats.float(), dim=-1) @ text.t()
    probs = (sim / tau).softmax(dim=-1)
    score, label = sim.max(dim=-1)
    return RegionResult(label.cpu().numpy().astype(np.int64), score.cpu().numpy(),
                        probs.cpu().numpy(), sim.cpu().numpy(), names, shown)
