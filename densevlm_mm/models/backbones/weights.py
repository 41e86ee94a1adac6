"""Image-tower weights from any checkpoint this project meets (spec §9.1).

:func:`image_tower_state_dict` finds the image tower in

* an open_clip checkpoint (full CLIP ``visual.*`` + text, or a saved image tower ``visual.*``),
* an EVA-CLIP fork release (vendored ``visual.blocks.*`` names, converted to open_clip's),
* a work-dir checkpoint of this project (DenseVLM / CLIPSelf / RegionCLIP, an mmengine dict with
  ``state_dict`` and ``meta``): the student under ``backbone.visual.*``; F-ViT-style detectors
  keep it there too,
* a bare tower state dict (``conv1.weight``, ``trunk.blocks.0...``),

and :func:`load_image_tower` loads it strictly into an open_clip image tower, naming the
checkpoint, the model and the missing / unexpected keys when they do not match.
"""
import logging
import re
from collections import Counter
from typing import Dict, List, Mapping, Optional, Tuple

from mmengine.logging import print_log
from torch import Tensor, nn

from densevlm_mm.utils.checkpoint import (CheckpointError, describe_account, load_and_account,
                                          load_checkpoint_file)

from .eva_converter import convert_eva_clip_state_dict
from .factory import prepare_clip_state_dict

#: where a checkpoint keeps the image tower, in order of preference: a CLIP / saved backbone, the
#: student of this project's algorithms (and detectors built on the backbone)
PREFERRED_PREFIXES = ('', 'backbone.')
_VISUAL = re.compile(r'(^|\.)visual\.')


def _tower_prefixes(state_dict: Mapping) -> Counter:
    """Count keys per prefix before ``visual.`` (``''``, ``'backbone.'``, ...)."""
    counts: Counter = Counter()
    for key in state_dict:
        m = _VISUAL.search(key)
        if m:
            counts[key[:m.end() - len('visual.')]] += 1
    return counts


def image_tower_state_dict(state_dict: Mapping[str, Tensor], path: str = '<state dict>',
                           prefix: Optional[str] = None,
                           is_eva: bool = False) -> Tuple[Dict[str, Tensor], str, List[str]]:
    """The image-tower part of a checkpoint, with keys relative to the tower.

    Args:
        state_dict: unwrapped checkpoint weights (no ``state_dict`` wrapper, no ``module.``).
        path: checkpoint name for messages.
        prefix: key prefix of the backbone (keys then start with ``visual.``), e.g.
            ``'backbone.'``; ``None``: found automatically (``''`` first, then ``'backbone.'``, then
            the only other prefix of ``visual.`` keys).
        is_eva: the target tower is an open_clip EVA02 one (vendored EVA-CLIP names are converted).

    Returns:
        ``(tower_state_dict, source, ignored)``: weights keyed like ``visual.state_dict()``, a
        description of where they were found (``"backbone.visual.*"``) and the ignored keys.

    Raises:
        CheckpointError: an explicit ``prefix`` matches nothing, or several prefixes are possible.
    """
    if prefix is None:
        counts = _tower_prefixes(state_dict)
        preferred = [p for p in PREFERRED_PREFIXES if p in counts]
        if preferred:
            prefix = preferred[0]
        elif len(counts) == 1:
            prefix = next(iter(counts))
        elif counts:
            raise CheckpointError(
                f'{path!r} holds image towers under several prefixes {sorted(counts)}; pick one '
                "with prefix=... (init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)).")
    if prefix is None:  # no `visual.` keys at all: a bare tower state dict
        tower, source, ignored = dict(state_dict), 'the whole file (bare image tower)', []
    else:
        head = prefix + 'visual.'
        tower = {k[len(head):]: v for k, v in state_dict.items() if k.startswith(head)}
        ignored = [k for k in state_dict if not k.startswith(head)]
        source = f'{head}*'
        if not tower:
            raise CheckpointError(
                f'{path!r} has no keys starting with {head!r} (its prefixes before "visual.": '
                f'{sorted(_tower_prefixes(state_dict))}); pass the right prefix or checkpoint.')
    if is_eva and any(k.startswith(('blocks.', 'patch_embed.')) for k in tower):
        converted, unmapped = convert_eva_clip_state_dict({'visual.' + k: v
                                                           for k, v in tower.items()})
        original = tower
        tower = {k[len('visual.'):]: v for k, v in converted.items()}
        # unmapped keys stay under their names: the strict load reports them as unexpected
        tower.update({k[len('visual.'):]: original[k[len('visual.'):]] for k in unmapped})
        source += ' (EVA-CLIP names converted)'
    return tower, source, ignored


def load_image_tower(visual: nn.Module, path: str, model_name: str = '?',
                     prefix: Optional[str] = None,
                     state_dict: Optional[Mapping[str, Tensor]] = None) -> Dict[str, List[str]]:
    """Load the image tower found in checkpoint ``path`` strictly into ``visual``.

    Args:
        visual: an open_clip image tower (``clip.visual``).
        path: any checkpoint of :func:`image_tower_state_dict`.
        model_name: the open_clip model name, for messages.
        prefix: see :func:`image_tower_state_dict`.
        state_dict: the unwrapped weights of ``path`` when the caller has already read them
            (the file is then not read again; ``path`` names it in messages).

    Returns:
        ``dict(source=..., ignored=[...])``.

    Raises:
        FileNotFoundError / IsADirectoryError / CheckpointError: unreadable file.
        CheckpointError: missing or unexpected keys (first few and counts) with the fix.
    """
    from open_clip.timm_model import TimmModel
    is_eva = isinstance(visual, TimmModel) and type(visual.trunk).__name__ == 'Eva'
    if state_dict is None:
        state_dict = load_checkpoint_file(path)
    tower, source, ignored = image_tower_state_dict(state_dict, path, prefix, is_eva)
    tower = prepare_clip_state_dict(visual, tower)
    problems = describe_account(load_and_account(visual, tower)[0])
    if problems:
        raise CheckpointError(
            f'checkpoint {path!r} ({source}) does not fit the image tower of {model_name!r}: '
            + problems + '. Fix: pass the model_name the checkpoint was made for (a '
            'DenseVLM work dir: the student model_name of its config; an EVA-CLIP release: the '
            'matching EVA02-* name), or the prefix of its image tower.')
    if ignored:
        groups = Counter(k.split('.', 1)[0] for k in ignored)
        print_log(f'loaded the image tower of {model_name!r} from {path!r} ({source}); ignored '
                  f'{len(ignored)} other tensors ({dict(groups)})', logger='current',
                  level=logging.INFO)
    return dict(source=source, ignored=ignored)


__all__ = ['image_tower_state_dict', 'load_image_tower', 'PREFERRED_PREFIXES']
