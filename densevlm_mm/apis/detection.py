"""Open-vocabulary detection with an F-ViT detector of this project (``configs/fvit/``).

``init_detector`` builds the config's detector and loads a detector checkpoint strictly;
``detect`` runs mmdet's ``inference_detector`` (the config's test pipeline) on one image and
returns the boxes above a score threshold with the names of the detector's classes (the rows of
its text-embedding file).
"""
from dataclasses import dataclass
from typing import List, Optional, Union

import numpy as np
import torch

from .images import ImageLike, load_image


@dataclass
class Detections:
    """Boxes ``[K, 4]`` x1,y1,x2,y2 in image pixels, ``scores [K]``, ``labels [K]`` (indices into
    ``class_names``), sorted by decreasing score."""
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: List[str]


def init_detector(config, checkpoint: Optional[str], device: Union[str, torch.device] = 'cpu',
                  cfg_options: Optional[dict] = None):
    """Build an F-ViT detector and load its checkpoint strictly.

    Args:
        config: F-ViT config file (or ``Config``) of this project.
        checkpoint: detector checkpoint (``work_dirs/<fvit run>/epoch_N.pth``); it holds every
            weight, so the config's ``model.backbone.pretrained`` is not read. ``None``: the
            config's own initialisation (backbone from ``pretrained``; the heads random).
        device: ``'cpu'`` / ``'cuda'``.
        cfg_options: overrides merged into the config.

    Raises:
        ValueError: the config is not an F-ViT detector config.
        CheckpointError: missing / unexpected keys (with the key accounting).
    """
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, DefaultScope

    from densevlm_mm.utils import register_all_modules
    from densevlm_mm.utils.checkpoint import load_model_checkpoint

    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    kind = str((cfg.get('model') or {}).get('type', '')).split('.')[-1]
    if kind != 'FViT':
        raise ValueError(f'{getattr(cfg, "filename", "config")}: model.type is {kind or "missing"}'
                         ', not FViT; --mode det needs an F-ViT config (configs/fvit/)')
    if checkpoint is not None:
        cfg.model.backbone.pretrained = None  # every weight comes from the detector checkpoint
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('densevlm_mm'):
        model = MODELS.build(cfg.model)
    model = revert_sync_batchnorm(model)
    if checkpoint is not None:
        load_model_checkpoint(model, checkpoint, strict=True)
    model.cfg = cfg  # mmdet's inference_detector reads the test pipeline from here
    model.dataset_meta = dict(classes=tuple(model.class_names))
    return model.to(device).eval()


@torch.no_grad()
def detect(model, image: ImageLike, score_thr: float = 0.3) -> Detections:
    """Detections of one image (upright, EXIF applied) with scores above ``score_thr``."""
    from mmdet.apis import inference_detector
    from mmengine.registry import DefaultScope
    rgb = load_image(image)
    with DefaultScope.overwrite_default_scope('mmdet'):
        result = inference_detector(model, np.ascontiguousarray(rgb[..., ::-1]))  # BGR, as cv2
    pred = result.pred_instances
    keep = pred.scores >= score_thr
    boxes, scores, labels = pred.bboxes[keep], pred.scores[keep], pred.labels[keep]
    order = torch.argsort(scores, descending=True)
    return Detections(boxes[order].cpu().numpy(), scores[order].cpu().numpy(),
                      labels[order].cpu().numpy().astype(np.int64), list(model.class_names))
