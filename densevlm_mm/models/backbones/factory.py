"""Building stock open_clip models offline (``densevlm_mm.models.clip_factory`` re-exports this).

``create_clip`` builds an unmodified ``open_clip_torch`` model (no fork, no vendored model code)
from a config name (open_clip's own or one bundled in ``densevlm_mm/model_configs``) or from a
config dict, randomly initialised unless ``pretrained`` is a *local* file. Nothing is downloaded.

Tiny configs for tests and demos (random init, fast on CPU at 64-96 px):

=============================  ========  ======  =====  ==========================================
name                           family    embed   stride native input / grid
=============================  ========  ======  =====  ==========================================
``densevlm-tiny-vit``          vit       32      16     64 (4x4), width 64, 3 blocks, 2 heads
``densevlm-tiny-eva02``        eva02     32      16     64 (4x4), width 64, 3 blocks, 2 heads, RoPE
``densevlm-tiny-eva02-teacher`` eva02    48      14     56 (4x4), width 96, 3 blocks, 3 heads, RoPE
``densevlm-tiny-rn``           resnet    32      32     64 (2x2), ModifiedResNet [1,1,1,1] width 16
``densevlm-tiny-convnext``     convnext  32      32     64 (2x2), ConvNeXt dims 16/32/48/64
=============================  ========  ======  =====  ==========================================

Text towers: width 32, 2 layers, 2 heads, context 77, vocab 49408 (open_clip's bundled BPE
``SimpleTokenizer`` works offline). The EVA02 configs use ``custom_text`` (``text.*`` keys) like
open_clip's ``EVA02-B-16``.

open_clip's ``TimmModel`` passes no architecture kwargs to timm, so the tiny timm trunks are timm
entrypoints registered here (:func:`register_timm_variant`): an existing timm architecture
(``eva02_base_patch16_clip_224``, ``eva02_large_patch14_clip_336``, ``convnext_base``) with
overridden size kwargs. A config dict may do the same with the extension key
``vision_cfg['timm_model_kwargs']``.
"""
import hashlib
import json
import logging
import os.path as osp
import re
import sys
from copy import deepcopy
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import open_clip
import timm
from open_clip.tokenizer import HFTokenizer
from open_clip.transform import PreprocessCfg
import torch
from mmengine.logging import print_log
from torch import nn

from densevlm_mm.utils.checkpoint import (CheckpointError, load_checkpoint_file,
                                          load_state_dict_reported)

from .eva_converter import convert_eva_clip_state_dict

BUNDLED_CONFIG_DIR = Path(__file__).resolve().parents[2] / 'model_configs'

#: tiny timm trunks used by the bundled configs: name -> (base timm architecture, overrides)
TINY_TIMM_VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    'densevlm_tiny_eva02_patch16_clip': (
        'eva02_base_patch16_clip_224',
        dict(img_size=64, embed_dim=64, depth=3, num_heads=2, ref_feat_shape=(5, 5))),
    'densevlm_tiny_eva02_patch14_clip': (
        'eva02_large_patch14_clip_336',
        dict(img_size=56, embed_dim=96, depth=3, num_heads=3, ref_feat_shape=(5, 5))),
    'densevlm_tiny_convnext': (
        'convnext_base', dict(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64))),
}

_TIMM_VARIANTS: Dict[str, Tuple[str, Dict[str, Any]]] = {}
_ROPE_KEY = re.compile(r'(^|\.)rope\.|freqs_cos|freqs_sin')


def register_timm_variant(name: str, base: str, **overrides: Any) -> str:
    """Register timm entrypoint ``name`` = ``timm.create_model(base, **overrides)``; idempotent.

    The entrypoint never loads pretrained weights (``pretrained=True`` raises).
    """
    if name in _TIMM_VARIANTS:
        if _TIMM_VARIANTS[name] != (base, overrides):
            raise ValueError(f'timm variant {name!r} is already registered with other arguments')
        return name
    if not timm.is_model(base):
        raise ValueError(f'unknown timm architecture {base!r}')

    def _entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(f'{name} is a densevlm_mm size variant of {base}: it has no '
                             'pretrained weights (nothing is downloaded).')
        kwargs.pop('pretrained_cfg', None)
        kwargs.pop('pretrained_cfg_overlay', None)
        return timm.create_model(base, pretrained=False, **{**overrides, **kwargs})

    _entrypoint.__name__ = _entrypoint.__qualname__ = name
    _entrypoint.__module__ = __name__
    setattr(sys.modules[__name__], name, _entrypoint)  # timm lists it in this module's __all__
    timm.models.register_model(_entrypoint)
    _TIMM_VARIANTS[name] = (base, deepcopy(overrides))
    return name


def register_bundled_configs() -> None:
    """Add the tiny timm variants and every json of ``densevlm_mm/model_configs`` to open_clip."""
    for name, (base, overrides) in TINY_TIMM_VARIANTS.items():
        register_timm_variant(name, base, **overrides)
    if not set(_bundled_names()) <= set(open_clip.list_models()):
        open_clip.add_model_config(BUNDLED_CONFIG_DIR)


def _resolve_timm_kwargs(cfg: Dict) -> Dict:
    """Turn ``vision_cfg['timm_model_kwargs']`` into a registered timm variant name."""
    vision = cfg['vision_cfg']
    extra = vision.pop('timm_model_kwargs', None)
    if extra:
        base = vision['timm_model_name']
        digest = hashlib.sha1(json.dumps([base, extra], sort_keys=True,
                                         default=str).encode()).hexdigest()[:10]
        vision['timm_model_name'] = register_timm_variant(
            f'densevlm_{base}_{digest}', base, **{k: tuple(v) if isinstance(v, list) else v
                                                 for k, v in extra.items()})
    return cfg


def _build_clip(cfg: Dict, precision: str) -> nn.Module:
    """Instantiate the open_clip model class for a config dict (random init, fp32 or cast)."""
    cfg = _resolve_timm_kwargs(deepcopy(cfg))
    for key in ('embed_dim', 'vision_cfg', 'text_cfg'):
        if key not in cfg:
            raise ValueError(f'model_cfg needs {key!r} (an open_clip model config dict), '
                             f'got keys {sorted(cfg)}')
    vision, text = cfg['vision_cfg'], cfg['text_cfg']
    if vision.get('timm_model_name'):
        vision['timm_model_pretrained'] = False  # never fetch timm weights
    if text.get('hf_model_name'):
        text['hf_model_pretrained'] = False
    custom_text = cfg.pop('custom_text', False) or bool(text.get('hf_model_name'))
    if custom_text:
        model_cls = open_clip.CoCa if 'multimodal_cfg' in cfg else open_clip.CustomTextCLIP
    else:
        model_cls = open_clip.CLIP
    model = model_cls(**cfg, cast_dtype=open_clip.get_cast_dtype(precision))
    pp = asdict(PreprocessCfg())
    pp['size'] = getattr(model.visual, 'image_size', pp['size'])
    open_clip.model.set_model_preprocess_cfg(model, pp)
    return model


def _is_vendored_eva(state_dict: Dict) -> bool:
    return any(k.startswith(('visual.blocks.', 'visual.patch_embed.')) for k in state_dict)


def prepare_clip_state_dict(module: nn.Module, state_dict: Dict) -> Dict:
    """Make a checkpoint loadable strictly into ``module``.

    Drops RoPE buffers (``*rope.*``, ``freqs_cos/sin``) the module does not hold and fills BatchNorm
    ``num_batches_tracked`` counters missing from FrozenBatchNorm checkpoints (spec §9.2).
    """
    own = module.state_dict()
    out = {k: v for k, v in state_dict.items() if k in own or not _ROPE_KEY.search(k)}
    for key, value in own.items():
        if key.endswith('num_batches_tracked') and key not in out:
            out[key] = value
    return out


def load_clip_weights(model: nn.Module, path: str, require_text: bool = False,
                      state_dict: Optional[Dict] = None) -> None:
    """Load a local checkpoint into an open_clip model strictly (mismatched keys raise).

    Vendored EVA-CLIP state dicts are converted first. A file holding only ``visual.*`` keys
    (e.g. a saved image tower) fills ``model.visual`` and leaves the text tower as it is, unless
    ``require_text`` (then it raises). ``state_dict``: the weights of ``path`` when the caller has
    already read them (the file is then not read again; ``path`` names it in messages).
    """
    if state_dict is None:
        state_dict = load_checkpoint_file(path)
    if _is_vendored_eva(state_dict):
        converted, unmapped = convert_eva_clip_state_dict(state_dict)
        if unmapped:  # kept under their names: the strict load reports them as unexpected
            print_log(f'EVA-CLIP conversion of {path!r} left {len(unmapped)} keys unmapped: '
                      f'{unmapped[:8]}', logger='current', level=logging.WARNING)
            converted.update({k: state_dict[k] for k in unmapped})
        state_dict = converted
    target, what = model, type(model).__name__
    has_text = any(not k.startswith('visual.') for k in model.state_dict())
    if state_dict and has_text and all(k.startswith('visual.') for k in state_dict):
        if require_text:
            raise CheckpointError(f'{path!r} holds only image-tower weights (visual.*), but a '
                                  'full CLIP checkpoint with the text tower is needed here; pass '
                                  'the original open_clip / EVA-CLIP release file.')
        print_log(f'{path!r} holds only image-tower weights; the text tower is left as '
                  'initialised', logger='current', level=logging.WARNING)
        target, what = model.visual, f'{what}.visual'
        state_dict = {k[len('visual.'):]: v for k, v in state_dict.items()}
    state_dict = prepare_clip_state_dict(target, state_dict)
    load_state_dict_reported(target, state_dict, strict=True, name=f'{what} from {path!r}')


def _offline_tokenizer(model_name: str, cfg: Optional[Dict]) -> Callable:
    if cfg is None:
        return open_clip.get_tokenizer(model_name)
    text = cfg.get('text_cfg', {})
    if text.get('hf_tokenizer_name'):
        return HFTokenizer(text['hf_tokenizer_name'],
                                     context_length=text.get('context_length', 77),
                                     **(text.get('tokenizer_kwargs') or {}))
    return open_clip.SimpleTokenizer(context_length=text.get('context_length', 77),
                                     **(text.get('tokenizer_kwargs') or {}))


def create_clip(model_name: str,
                pretrained: Optional[str] = None,
                model_cfg: Optional[Dict] = None,
                precision: str = 'fp32',
                device: str = 'cpu') -> Tuple[nn.Module, Callable]:
    """Build a stock open_clip model and its tokenizer, offline.

    Args:
        model_name: open_clip config name (bundled tiny names included); a label when
            ``model_cfg`` is given.
        pretrained: local checkpoint file (``.pt``/``.pth``/``.bin``/``.safetensors``; raw, or
            wrapped in ``state_dict``/``model``, optional ``module.`` prefix; vendored EVA-CLIP keys
            are converted). ``None``: random init. Pretrained *tags* are refused.
        model_cfg: open_clip config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``) used instead
            of the name's config.
        precision: open_clip precision (``'fp32'``, ``'fp16'``, ``'bf16'``, ``'pure_fp16'``, ...).
        device: target device.

    Returns:
        ``(model, tokenizer)``; the tokenizer maps ``list[str]`` to ``LongTensor[N, context]``.

    Raises:
        ValueError: ``pretrained`` is not an existing file (e.g. an open_clip tag), or unknown name.
        RuntimeError: the checkpoint has missing / unexpected keys, or unsafe pickled objects.
    """
    check_local_checkpoint(pretrained, model_name, model_cfg)
    model, cfg = _build_named(model_name, model_cfg, precision)
    if pretrained is not None:
        load_clip_weights(model, pretrained)
    _set_precision(model, cfg, precision, device)
    tokenizer = _offline_tokenizer(model_name, cfg if model_cfg is not None else None)
    return model, tokenizer


def build_clip_model(model_name: str, model_cfg: Optional[Dict] = None, precision: str = 'fp32',
                     device: str = 'cpu') -> nn.Module:
    """A randomly initialised stock open_clip model (no weights, no tokenizer; see
    :func:`create_clip` for the arguments)."""
    model, cfg = _build_named(model_name, model_cfg, precision)
    _set_precision(model, cfg, precision, device)
    return model


def check_local_checkpoint(pretrained: Optional[str], model_name: str,
                           model_cfg: Optional[Dict] = None) -> None:
    """Raise ValueError unless ``pretrained`` is ``None`` or an existing path (tags refused)."""
    if pretrained is None or osp.exists(str(pretrained)):
        return
    register_bundled_configs()
    tags = open_clip.list_pretrained_tags_by_model(model_name) if model_cfg is None else []
    what = 'a known open_clip pretrained tag' if pretrained in tags else 'not an existing file'
    raise ValueError(
        f'pretrained={pretrained!r} for {model_name!r} is {what}. densevlm_mm never downloads '
        'weights: download the checkpoint yourself and pass its local file path.')


def _build_named(model_name: str, model_cfg: Optional[Dict],
                 precision: str) -> Tuple[nn.Module, Dict]:
    register_bundled_configs()
    if model_cfg is None:
        cfg = open_clip.get_model_config(model_name)
        if cfg is None:
            raise ValueError(f'unknown open_clip model {model_name!r}; pass model_cfg or one of '
                             f'the bundled tiny configs ({sorted(_bundled_names())}) or '
                             'open_clip.list_models()')
    else:
        cfg = deepcopy(model_cfg)
    return _build_clip(cfg, precision=precision), cfg


def _set_precision(model: nn.Module, cfg: Dict, precision: str, device: str) -> None:
    is_timm = bool(cfg['vision_cfg'].get('timm_model_name'))
    # private: open_clip's precision policy (fp16 casts, LayerNormFp32 kept fp32) has no public
    # entry point for an already-built model; create_model would also fetch default tower weights
    open_clip.factory._set_model_device_and_precision(model, torch.device(device), precision,
                                                       is_timm)


def _bundled_names():
    return [p.stem for p in BUNDLED_CONFIG_DIR.glob('*.json')]


__all__ = ['register_bundled_configs', 'create_clip', 'build_clip_model', 'register_timm_variant',
           'check_local_checkpoint',
           'prepare_clip_state_dict', 'load_clip_weights', 'TINY_TIMM_VARIANTS',
           'BUNDLED_CONFIG_DIR']

register_bundled_configs()  # bundled names usable with open_clip's own API after import
