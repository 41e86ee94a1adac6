"""Which model a config or a checkpoint belongs to, and which API function loads it.

The API has one loader per kind of model: :func:`~densevlm_mm.apis.init_model` (the aligned image
tower with a CLIP text tower: dense label maps, region labels), :func:`init_segmentor` (CAT-Seg and
SAN, each with its own text tower and head) and :func:`init_detector` (F-ViT). A config or a
checkpoint given to the wrong loader is refused with the loader to use, instead of being loaded
in part (e.g. a CAT-Seg checkpoint's fine-tuned image tower without its own text tower and head).
"""
import os.path as osp
from typing import Iterable, Optional, Tuple

#: model kind -> (what it is, the API call that loads it)
KINDS = {
    'catseg': ('a CAT-Seg segmentor', 'init_segmentor(config, checkpoint)'),
    'san': ('a SAN segmentor', 'init_segmentor(config, checkpoint)'),
    'fvit': ('an F-ViT detector', 'init_detector(config, checkpoint)'),
    'aligned': ('an aligned image tower (DenseVLM / CLIPSelf / RegionCLIP training run)',
                'init_model(config, checkpoint)'),
    'clip': ('a CLIP model (image and text towers)', 'init_model(model_name, checkpoint)'),
    'image_tower': ('an image tower alone (visual.*)', 'init_model(config, checkpoint)'),
}
SEGMENTORS = ('catseg', 'san')
DOWNSTREAM = ('catseg', 'san', 'fvit')
_CONFIG_TYPES = {'CATSeg': 'catseg', 'SAN': 'san', 'MultimodalEncoderDecoder': 'san',
                 'FViT': 'fvit'}


def load_config(config, cfg_options: Optional[dict] = None) -> Tuple[object, str]:
    """``(Config, name for messages)`` of a config file or ``Config``, ``cfg_options`` merged.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    from mmengine.config import Config
    if isinstance(config, Config):
        cfg, source = config, getattr(config, 'filename', None) or 'config'
    else:
        if not osp.isfile(config):
            raise FileNotFoundError(f'config file not found: {config!r}')
        cfg, source = Config.fromfile(config), str(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg, source


def config_kind(cfg) -> Optional[str]:
    """Kind of the model of an mmengine config (``model.type``): ``'catseg'``, ``'san'``,
    ``'fvit'``, ``'aligned'`` (a ``DenseVLMBackbone`` backbone) or ``None``."""
    model = cfg.get('model') or {}
    kind = _CONFIG_TYPES.get(str(model.get('type', '')).split('.')[-1])
    if kind is not None:
        return kind
    backbone = model.get('backbone') or {}
    if str(backbone.get('type', '')).split('.')[-1] == 'DenseVLMBackbone':
        return 'aligned'
    return None


def checkpoint_kind(keys: Iterable[str]) -> Optional[str]:
    """Kind of model whose (unwrapped) state-dict ``keys`` these are.

    CAT-Seg: ``text_encoder.clip.*`` beside ``decode_head.*``; SAN (mmseg layout):
    ``image_encoder.*`` beside ``decode_head.*``; F-ViT: ``rpn_head.*`` / ``roi_head.*``; a
    training run of this project: ``backbone.*``; a CLIP model: ``visual.*`` and text keys; an
    image tower: only ``visual.*``. ``None``: none of these (e.g. a bare tower state dict).
    """
    keys = list(keys)
    heads = {k.split('.', 1)[0] for k in keys}
    if 'decode_head' in heads and any(k.startswith('text_encoder.clip.') for k in keys):
        return 'catseg'
    if 'decode_head' in heads and 'image_encoder' in heads:
        return 'san'
    if heads & {'rpn_head', 'roi_head'}:
        return 'fvit'
    if 'backbone' in heads:
        return 'aligned'
    if 'visual' in heads:
        return 'clip' if heads - {'visual'} else 'image_tower'
    return None


def wrong_loader(kind: str, source: str, loader: str, hint: str = '') -> ValueError:
    """The error for ``source`` (a config or checkpoint of ``kind``) given to ``loader``."""
    what, call = KINDS[kind]
    msg = f'{source} is {what}, which {loader} does not load.'
    if kind in DOWNSTREAM and loader == 'init_model':
        msg += (' Its image tower was trained together with its own text tower and head; '
                'loading the image tower alone would drop them.')
    return ValueError(f'{msg} Load it with densevlm_mm.apis.{call}.' + (f' {hint}' if hint
                                                                          else ''))


__all__ = ['KINDS', 'SEGMENTORS', 'DOWNSTREAM', 'load_config', 'config_kind', 'checkpoint_kind',
           'wrong_loader']
