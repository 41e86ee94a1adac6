"""Open-vocabulary segmentation with a trained CAT-Seg or SAN (``configs/catseg|san/``).

``init_segmentor`` builds the config's segmentor and loads its checkpoint strictly — image tower,
its own (fine-tuned) text tower and head; ``inference_segmentor`` names the classes at inference
time (encoded by that text tower) and runs mmseg's ``inference_model`` (the config's test
pipeline and the segmentor's own inference, e.g. CAT-Seg's sliding window) on one image. Like
mmseg's ``init_model`` / ``inference_model``, with the vocabulary as an argument.
"""
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .images import ImageLike, load_image
from .inference import class_areas
from .model_kinds import (KINDS, SEGMENTORS, checkpoint_kind, config_kind, load_config,
                          wrong_loader)
from .vocabulary_embeddings import display_name, resolve_vocabulary


@dataclass
class SegmentationResult:
    """Per-pixel labels of one image from a segmentor.

    Attributes:
        label_map: int64 ``[H, W]`` class index per image pixel.
        score_map: float32 ``[H, W]`` the segmentor's score of the chosen class (CAT-Seg: the
            sigmoid probability; SAN: the mask-class score).
        names / display_names: the vocabulary (``display_names``: first synonym, for legends).
        data_sample: mmseg's ``SegDataSample`` (``pred_sem_seg``, ``seg_logits``).
        image: the image (uint8 RGB ``[H, W, 3]``, upright).
    """
    label_map: np.ndarray
    score_map: np.ndarray
    names: List[str]
    display_names: List[str]
    data_sample: object
    image: np.ndarray

    def class_areas(self) -> Dict[str, float]:
        """Share of the image per class present, largest first."""
        return class_areas(self.label_map, self.names)

    def draw(self, out_file: Optional[str] = None, scale: float = 1.0, **kwargs) -> np.ndarray:
        """The label map over the image with class names and a legend
        (:func:`~densevlm_mm.visualization.draw_label_map`); RGB ``[H·scale, W·scale, 3]``."""
        from densevlm_mm.visualization import draw_label_map
        return draw_label_map(self.image, self.label_map, self.display_names,
                              out_file=out_file, scale=scale, **kwargs)


def _test_pipeline(cfg) -> list:
    """The config's test pipeline (``test_pipeline``, else the test dataset's) without
    ``LoadAnnotations``, starting from an array."""
    pipeline = cfg.get('test_pipeline') or \
        ((cfg.get('test_dataloader') or {}).get('dataset') or {}).get('pipeline')
    if not pipeline:
        raise ValueError(f'{getattr(cfg, "filename", "config")} has no test_pipeline to prepare '
                         'images with')
    steps = [dict(step) for step in pipeline
             if str(step.get('type', '')).split('.')[-1] != 'LoadAnnotations']
    steps[0]['type'] = 'LoadImageFromNDArray'
    return steps


def init_segmentor(config, checkpoint: str, device: Union[str, torch.device] = 'cpu',
                   cfg_options: Optional[dict] = None):
    """Build a CAT-Seg or SAN segmentor and load its trained checkpoint strictly.

    The checkpoint holds every weight — the image tower, the segmentor's own text tower (CAT-Seg
    fine-tunes its q/v projections) and the head — so the config's CLIP ``pretrained`` files are
    not read.

    Args:
        config: CAT-Seg / SAN config file (or ``Config``) of this project.
        checkpoint: the training run's ``iter_N.pth``.
        device: ``'cpu'`` / ``'cuda'``.
        cfg_options: overrides merged into the config.

    Returns:
        The mmseg segmentor (eval mode) with ``cfg`` and ``dataset_meta`` (its classes).

    Raises:
        FileNotFoundError: config or checkpoint missing.
        ValueError: a config or checkpoint of another kind of model (naming its loader), or a
            checkpoint of the other segmentor.
        CheckpointError: missing / unexpected keys (with the key accounting).
    """
    from mmengine.registry import DefaultScope

    from densevlm_mm.registry import MODELS
    from densevlm_mm.utils import load_checkpoint_file, register_all_modules
    from densevlm_mm.utils.checkpoint import load_state_dict_reported

    cfg, source = load_config(config, cfg_options)
    kind = config_kind(cfg)
    if kind not in SEGMENTORS:
        if kind is None:
            raise ValueError(f'{source}: model.type {(cfg.get("model") or {}).get("type")!r} is '
                             'neither CAT-Seg nor SAN; init_segmentor loads configs/catseg/ and '
                             'configs/san/ configs')
        raise wrong_loader(kind, f'{source} (model.type {cfg.model.type})', 'init_segmentor')
    if checkpoint is None or not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint file not found: {checkpoint!r} (init_segmentor needs '
                                "the trained segmentor's checkpoint: its head and text tower are "
                                'trained)')
    state_dict = load_checkpoint_file(checkpoint)
    found = checkpoint_kind(state_dict)
    if found != kind:
        if found in SEGMENTORS:
            raise ValueError(f'checkpoint {checkpoint!r} is {KINDS[found][0]} but {source} builds '
                             f'{KINDS[kind][0]}: give the config it was trained with '
                             f'(configs/{found}/...)')
        if found is not None:
            raise wrong_loader(found, f'checkpoint {checkpoint!r}', 'init_segmentor')
        raise ValueError(f'checkpoint {checkpoint!r} is no {kind} checkpoint (no decode_head / '
                         'text_encoder keys); give the iter_N.pth of a training run of '
                         f'{source}')
    # every weight comes from the checkpoint: no CLIP file is read
    model_cfg = cfg.model
    if kind == 'san':
        model_cfg.pretrained = None
    else:
        model_cfg.backbone.pretrained = None
        model_cfg.text_encoder.pretrained = None
    model_cfg.train_cfg = None
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope') or 'mmseg'):
        model = MODELS.build(model_cfg)
    load_state_dict_reported(model, state_dict, strict=True,
                             name=f'{type(model).__name__} from {checkpoint!r}',
                             hint=f'Check that {source} is the config the checkpoint was '
                                  'trained with.')
    model.cfg = cfg
    model.cfg.test_pipeline = _test_pipeline(cfg)  # mmseg's inference_model reads it
    if kind == 'catseg' and model.test_class_names is None:  # test_classes='from_dataset'
        model.set_vocabulary(model.train_class_names)
    names = _segmentor_classes(model)
    model.dataset_meta = dict(classes=tuple(names))
    return model.to(device).eval()


def _segmentor_classes(model) -> List[str]:
    names = getattr(model, 'eval_class_names', None)
    return list(names) if names else []


def segmentor_vocabulary(model, vocabulary: Union[str, Sequence[str], None]) -> List[str]:
    """Give the segmentor the classes of ``vocabulary`` (a preset name such as ``'ade150'`` or a
    list of names, checked like the dense label map's) and return them; ``None`` keeps its
    current classes."""
    if vocabulary is None:
        names = _segmentor_classes(model)
        if not names:
            raise ValueError('the segmentor has no classes yet: pass a vocabulary')
        return names
    names, _, _ = resolve_vocabulary(vocabulary)
    if names != _segmentor_classes(model):
        model.set_vocabulary(names)
        model.dataset_meta = dict(getattr(model, 'dataset_meta', None) or {},
                                  classes=tuple(names))
    return names


@torch.no_grad()
def inference_segmentor(model, image: ImageLike,
                        vocabulary: Union[str, Sequence[str], None] = None) -> SegmentationResult:
    """Label every pixel of one image with a class of ``vocabulary``.

    Args:
        model: from :func:`init_segmentor`.
        image: path, array or PIL image (EXIF orientation applied).
        vocabulary: class names (list), a preset (``'coco'``, ``'ade150'``, ...; see
            :data:`~densevlm_mm.apis.PRESETS`) or ``None`` (the classes the model has now).
            The segmentor keeps the vocabulary for later calls; its text encoder caches the
            class embeddings.

    Returns:
        :class:`SegmentationResult` of the image's size.
    """
    from mmengine.registry import DefaultScope
    from mmseg.apis import inference_model

    names = segmentor_vocabulary(model, vocabulary)
    rgb = load_image(image)
    with DefaultScope.overwrite_default_scope('mmseg'):
        sample = inference_model(model, np.ascontiguousarray(rgb[..., ::-1]))  # BGR, as cv2
    labels = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)
    logits = sample.seg_logits.data.float()
    if not bool(torch.isfinite(logits).all()):
        raise RuntimeError(f'the {type(model).__name__} gave non-finite class scores for this '
                           'image: its weights hold NaN / inf (an uninitialised or damaged '
                           'checkpoint?)')
    score = logits.gather(0, torch.from_numpy(labels)[None].to(logits.device))[0]
    return SegmentationResult(labels, score.cpu().numpy(), names,
                              [display_name(n) for n in names], sample, rgb)


__all__ = ['SegmentationResult', 'init_segmentor', 'inference_segmentor', 'segmentor_vocabulary']
