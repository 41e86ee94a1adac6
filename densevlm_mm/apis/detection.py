"""Open-vocabulary detection with an F-ViT detector of this project (``configs/fvit/``).

``init_detector`` builds the config's detector and loads a detector checkpoint strictly;
``detect`` runs mmdet's ``inference_detector`` (the config's test pipeline) on one image and
returns the boxes above a score threshold with their class names. The classes are the detector's
(the rows of its text-embedding file) or a vocabulary given at inference time, encoded by the
CLIP text tower that made those rows (``text_checkpoint``) — like mmdet's ``init_detector`` /
``inference_detector``, with the vocabulary as an argument.
"""
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .images import ImageLike, load_image
from .model_kinds import DOWNSTREAM, checkpoint_kind, config_kind, load_config, wrong_loader
from .vocabulary_embeddings import build_vocabulary_embeddings, display_name, resolve_vocabulary

#: rows of the detector's own classes re-encoded to check a text tower (cosine must exceed this)
_SAME_TOWER_COSINE = 0.999
_CHECKED_ROWS = 4


@dataclass
class Detections:
    """Boxes ``[K, 4]`` x1,y1,x2,y2 in image pixels, ``scores [K]``, ``labels [K]`` (indices into
    ``class_names``), sorted by decreasing score."""
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: List[str]
    image: Optional[np.ndarray] = None  # uint8 RGB [H, W, 3], upright

    def draw(self, out_file: Optional[str] = None, scale: float = 1.0) -> np.ndarray:
        """The boxes over the image with ``"<class>: <100 · score>"`` tags
        (:func:`~densevlm_mm.visualization.draw_region_labels`)."""
        from densevlm_mm.visualization import draw_region_labels
        if self.image is None:
            raise ValueError('these detections carry no image to draw on')
        return draw_region_labels(self.image, self.boxes, self.labels, self.scores,
                                  [display_name(n) for n in self.class_names],
                                  out_file=out_file, scale=scale)

    def to_json(self) -> List[dict]:
        """``[{box: [x1, y1, x2, y2], label: name, score}]`` (rounded), as the demo writes."""
        return [dict(box=[round(float(v), 2) for v in b], label=self.class_names[int(lab)],
                     score=round(float(s), 4))
                for b, lab, s in zip(self.boxes, self.labels, self.scores)]


@dataclass
class TextTower:
    """The CLIP text tower that encodes a detector's class names (the protocol of
    :func:`build_vocabulary_embeddings`: ``clip``, ``tokenizer``, ``model_name``,
    ``text_checkpoint``, ``device``, ``embed_dim``)."""
    clip: torch.nn.Module
    tokenizer: object
    model_name: str
    text_checkpoint: str
    device: torch.device
    embed_dim: int
    templates: List[str]
    cache: Dict[Tuple[str, ...], torch.Tensor] = field(default_factory=dict)

    def encode(self, names: Sequence[str]) -> torch.Tensor:
        """Unit rows ``[C, D]`` of ``names`` (kept for the session; cached on disk as
        :func:`build_vocabulary_embeddings` does)."""
        key = tuple(names)
        if key not in self.cache:
            self.cache[key] = build_vocabulary_embeddings(self, list(names),
                                                          templates=self.templates).embeddings
        return self.cache[key]


def init_detector(config, checkpoint: Optional[str], device: Union[str, torch.device] = 'cpu',
                  cfg_options: Optional[dict] = None, text_checkpoint: Optional[str] = None):
    """Build an F-ViT detector and load its checkpoint strictly.

    Args:
        config: F-ViT config file (or ``Config``) of this project.
        checkpoint: detector checkpoint (``work_dirs/<fvit run>/epoch_N.pth``); it holds every
            weight, so the config's ``model.backbone.pretrained`` is not read for the image
            tower. ``None``: the config's own initialisation (backbone from ``pretrained``; the
            heads random).
        device: ``'cpu'`` / ``'cuda'``.
        cfg_options: overrides merged into the config.
        text_checkpoint: the CLIP checkpoint whose text tower made the detector's class
            embeddings; it encodes vocabularies given to :func:`detect` (default: the config's
            ``model.backbone.pretrained`` when that file holds a text tower). Read on the first
            such call.

    Raises:
        ValueError: the config or the checkpoint is not an F-ViT one (naming the loader to use).
        CheckpointError: missing / unexpected keys (with the key accounting).
    """
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, DefaultScope

    from densevlm_mm.utils import load_checkpoint_file, register_all_modules
    from densevlm_mm.utils.checkpoint import load_state_dict_reported

    cfg, source = load_config(config, cfg_options)
    kind = config_kind(cfg)
    if kind != 'fvit':
        if kind is not None:
            raise wrong_loader(kind, f'{source} (model.type {cfg.model.type})', 'init_detector')
        found = (cfg.get('model') or {}).get('type') or 'missing'
        raise ValueError(f'{source}: model.type is {found}, not FViT; --mode det needs an F-ViT '
                         'config (configs/fvit/)')
    if text_checkpoint is not None and not osp.isfile(text_checkpoint):
        raise FileNotFoundError(f'text checkpoint not found: {text_checkpoint!r}')
    backbone_file = cfg.model.backbone.get('pretrained')
    state_dict = None
    if checkpoint is not None:
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint file not found: {checkpoint!r}')
        state_dict = load_checkpoint_file(checkpoint)
        found = checkpoint_kind(state_dict)
        if found not in ('fvit', None):
            hint = '' if found in DOWNSTREAM else ('An image tower for F-ViT goes into the '
                                                   'config as model.backbone.pretrained.')
            raise wrong_loader(found, f'checkpoint {checkpoint!r}',
                               f'init_detector with the F-ViT config {source}', hint=hint)
        cfg.model.backbone.pretrained = None  # every weight comes from the detector checkpoint
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('densevlm_mm'):
        model = MODELS.build(cfg.model)
    model = revert_sync_batchnorm(model)
    if state_dict is not None:
        load_state_dict_reported(model, state_dict, strict=True,
                                 name=f'{type(model).__name__} from {checkpoint!r}',
                                 hint=f'Check that {source} is the config the checkpoint was '
                                      'trained with.')
    model.cfg = cfg  # mmdet's inference_detector reads the test pipeline from here
    model.dataset_meta = dict(classes=tuple(model.class_names))
    # plain attributes (not sub-modules): the detector's state dict is unchanged
    model.text_tower = None
    model.text_source = text_checkpoint or backbone_file
    model.text_source_given = text_checkpoint is not None
    return model.to(device).eval()


def _text_tower(model) -> TextTower:
    """The detector's text tower, built on first use and checked against the detector's rows."""
    if getattr(model, 'text_tower', None) is not None:
        return model.text_tower
    from densevlm_mm.models.clip_factory import create_clip, load_clip_weights
    from densevlm_mm.text_embeddings import TEMPLATES, load_text_embeddings
    from densevlm_mm.utils import load_checkpoint_file
    head = model.roi_head.bbox_head
    rows_file = head.fc_cls.text_embeddings
    fix = (f'give the CLIP checkpoint whose text tower made {rows_file!r} '
           '(init_detector(..., text_checkpoint=CLIP); tools/demo.py --text-checkpoint CLIP)')
    path = getattr(model, 'text_source', None)
    if not path or not osp.isfile(path):
        raise ValueError(f'this detector has no text tower to encode a vocabulary: {fix}')
    state_dict = load_checkpoint_file(path)
    if checkpoint_kind(state_dict) != 'clip':
        given = 'text_checkpoint' if model.text_source_given else 'model.backbone.pretrained'
        raise ValueError(f'{given} {path!r} holds no text tower (it is no CLIP checkpoint): '
                         f'{fix}')
    model_name = model.backbone.model_name
    clip, tokenizer = create_clip(model_name, model_cfg=model.cfg.model.backbone.get('model_cfg'))
    load_clip_weights(clip, path, require_text=True, state_dict=state_dict)
    device = next(model.parameters()).device
    clip = clip.to(device).eval()
    try:
        templates = list(load_text_embeddings(rows_file).templates)
    except (OSError, ValueError, RuntimeError):
        templates = list(TEMPLATES)
    tower = TextTower(clip, tokenizer, model_name, path, device,
                      int(head.fc_cls.class_embeddings.shape[0]), templates)
    names = head.class_names[:_CHECKED_ROWS]
    ours = tower.encode(names).to(device)
    rows = F.normalize(head.fc_cls.class_embeddings.t()[:len(names)].float(), dim=-1)
    cosine = (ours * rows).sum(-1)
    if float(cosine.min()) < _SAME_TOWER_COSINE:
        worst = int(cosine.argmin())
        raise ValueError(f'the text tower of {path!r} does not reproduce the detector\'s class '
                         f'embeddings (cosine {float(cosine[worst]):.3f} for {names[worst]!r}): '
                         f'it is not the one the detector was trained with; {fix}')
    model.text_tower = tower
    return tower


def detector_vocabulary(model, vocabulary: Union[str, Sequence[str], None]) -> List[str]:
    """Give the detector the classes of ``vocabulary`` (a preset or a list of names), encoded by
    its text tower; ``None`` keeps the classes it has. Returns the class names."""
    if vocabulary is None:
        return list(model.class_names)
    names, _, _ = resolve_vocabulary(vocabulary)
    if names != list(model.class_names):
        tower = _text_tower(model)
        model.set_vocabulary(names, tower.encode(names))
    return names


@torch.no_grad()
def detect(model, image: ImageLike, score_thr: float = 0.3,
           vocabulary: Union[str, Sequence[str], None] = None) -> Detections:
    """Detections of one image (upright, EXIF applied) with scores above ``score_thr``.

    Args:
        model: from :func:`init_detector`.
        image: path, array or PIL image.
        score_thr: minimum score.
        vocabulary: class names (list) or a preset (``'coco'``, ``'lvis'``, ...), encoded by the
            detector's text tower (see ``text_checkpoint`` of :func:`init_detector`); names the
            detector was trained on as base classes keep the base weighting of F-ViT's
            detector x VLM ensemble, the others are scored as novel classes. ``None``: the
            classes the detector has now. The detector keeps the vocabulary for later calls.
    """
    from mmdet.apis import inference_detector
    from mmengine.registry import DefaultScope
    names = detector_vocabulary(model, vocabulary)
    rgb = load_image(image)
    with DefaultScope.overwrite_default_scope('mmdet'):
        result = inference_detector(model, np.ascontiguousarray(rgb[..., ::-1]))  # BGR, as cv2
    pred = result.pred_instances
    keep = pred.scores >= score_thr
    boxes, scores, labels = pred.bboxes[keep], pred.scores[keep], pred.labels[keep]
    order = torch.argsort(scores, descending=True)
    return Detections(boxes[order].cpu().numpy(), scores[order].cpu().numpy(),
                      labels[order].cpu().numpy().astype(np.int64), names, rgb)
