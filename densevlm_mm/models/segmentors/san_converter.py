"""open_clip (OpenAI-style ViT) / DenseVLM student weights → mmseg SAN keys.

mmseg's SAN (``MultimodalEncoderDecoder``) splits one CLIP model over three modules, each loading
its part of one file (``init_cfg=Pretrained_Part``, non-strict):

==========================================  =================================================
open_clip key                                SAN key
==========================================  =================================================
``visual.class_embedding [C]``               ``image_encoder.cls_token [1, 1, C]``
``visual.positional_embedding [L, C]``       ``image_encoder.pos_embed [1, L, C]``
``visual.conv1.weight``                      ``image_encoder.patch_embed.projection.weight``
``visual.ln_pre.*``                          ``image_encoder.ln_pre.*``
``visual.transformer.resblocks.i`` (i < s)   ``image_encoder.layers.i.{ln1,attn.attn,ln2,ffn}``
``visual.transformer.resblocks.i`` (i >= s)  ``decode_head.rec_with_attnbias.layers.(i-s)``
``visual.ln_post.*``                         ``decode_head.rec_with_attnbias.ln_post.*``
``visual.proj [C, D]``                       ``decode_head.rec_with_attnbias.proj.weight [D, C]``
``transformer.resblocks.i`` (text)           ``text_encoder.transformer.i``
``token_embedding / positional_embedding /``  ``text_encoder.<same>``
``ln_final / text_projection / logit_scale``
==========================================  =================================================

(the mapping of mmseg's ``tools/model_converters/clip2mmseg.py``; ``s`` = 9 for ViT-B/16, 18 for
ViT-L/14). Transformer layers map ``ln_1 → ln1 / norms.0``, ``attn → attn.attn /
attentions.0.attn``, ``ln_2 → ln2 / norms.1``, ``mlp.c_fc → ffn(s).layers.0.0``,
``mlp.c_proj → ffn(s).layers.1``. Every source key is either mapped or reported; nothing is dropped silently.

A DenseVLM work-dir checkpoint holds the student image tower under ``backbone.visual.*`` and no
text tower; :func:`open_clip_state_dict_from_checkpoint` takes the text tower from a base
open_clip checkpoint (DenseVLM does not train the text encoder).
"""
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import torch

# SAN modules that hold CLIP weights; keys under them but not from CLIP are SAN's own.
SAN_CLIP_PREFIXES = ('image_encoder.', 'decode_head.rec_with_attnbias.', 'text_encoder.')
# Parameters of those modules that SAN learns itself (not in a CLIP checkpoint).
SAN_OWN_KEYS = ('text_encoder.bg_embed', 'decode_head.rec_with_attnbias.sos_token')
# open_clip keys without a SAN counterpart (buffers rebuilt by SAN).
IGNORED_SOURCE_KEYS = ('attn_mask', 'visual.attn_mask')

_LAYER_IMAGE = {'ln_1': 'ln1', 'attn': 'attn.attn', 'ln_2': 'ln2', 'mlp.c_fc': 'ffn.layers.0.0',
                'mlp.c_proj': 'ffn.layers.1'}
_LAYER_TRANSFORMER = {'ln_1': 'norms.0', 'attn': 'attentions.0.attn', 'ln_2': 'norms.1',
                      'mlp.c_fc': 'ffns.0.layers.0.0', 'mlp.c_proj': 'ffns.0.layers.1'}
_TEXT_TOP = ('token_embedding.weight', 'positional_embedding', 'text_projection', 'logit_scale',
             'ln_final.weight', 'ln_final.bias')


def _map_block(rest: str, table: Mapping[str, str]) -> Optional[str]:
    """``'attn.in_proj_weight'`` → ``'attn.attn.in_proj_weight'`` (``None`` if unknown)."""
    for src, dst in table.items():
        if rest.startswith(src + '.'):
            return dst + rest[len(src):]
    return None


def num_visual_layers(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Number of ``visual.transformer.resblocks.*`` blocks in an open_clip state dict."""
    ids = {int(k.split('.')[3]) for k in state_dict
           if k.startswith('visual.transformer.resblocks.')}
    return max(ids) + 1 if ids else 0


def convert_open_clip_to_san(state_dict: Mapping[str, torch.Tensor], visual_split: int,
                             include_text: bool = True
                             ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map an open_clip OpenAI-style ViT CLIP state dict to SAN's keys.

    Args:
        state_dict: ``visual.*`` (+ text tower) keys of an open_clip ``CLIP`` model.
        visual_split: number of image blocks kept in ``image_encoder`` (SAN: 9 for B/16, 18 for
            L/14); the remaining blocks go to ``decode_head.rec_with_attnbias``.
        include_text: map the text tower (else text keys are reported as unmapped).

    Returns:
        ``(converted, unmapped)``: SAN state dict and the source keys that were not mapped
        (excluding :data:`IGNORED_SOURCE_KEYS`).

    Raises:
        ValueError: not an OpenAI-style ViT (no ``visual.transformer.resblocks``), or a split
            outside ``1..layers-1``.
    """
    depth = num_visual_layers(state_dict)
    if depth == 0 or 'visual.conv1.weight' not in state_dict:
        raise ValueError('convert_open_clip_to_san: no OpenAI-style ViT image tower '
                         '(visual.conv1 / visual.transformer.resblocks.*) in the state dict; SAN '
                         'takes open_clip ViT models (EVA02 / ResNet / ConvNeXt towers do not fit)')
    if not 0 < visual_split < depth:
        raise ValueError(f'visual_split={visual_split} must be in 1..{depth - 1} for a '
                         f'{depth}-block image tower')
    out: Dict[str, torch.Tensor] = {}
    unmapped: List[str] = []
    rec = 'decode_head.rec_with_attnbias.'
    for key, value in state_dict.items():
        new = None
        if key in IGNORED_SOURCE_KEYS:
            continue
        if key == 'visual.class_embedding':
            new, value = 'image_encoder.cls_token', value.reshape(1, 1, -1)
        elif key == 'visual.positional_embedding':
            new, value = 'image_encoder.pos_embed', value.unsqueeze(0)
        elif key == 'visual.conv1.weight':
            new = 'image_encoder.patch_embed.projection.weight'
        elif key.startswith('visual.ln_pre.'):
            new = 'image_encoder.' + key[len('visual.'):]
        elif key.startswith('visual.ln_post.'):
            new = rec + key[len('visual.'):]
        elif key == 'visual.proj':
            new, value = rec + 'proj.weight', value.t().contiguous()
        elif key.startswith('visual.transformer.resblocks.'):
            parts = key.split('.', 4)
            idx, rest = int(parts[3]), parts[4]
            if idx < visual_split:
                sub = _map_block(rest, _LAYER_IMAGE)
                new = None if sub is None else f'image_encoder.layers.{idx}.{sub}'
            else:
                sub = _map_block(rest, _LAYER_TRANSFORMER)
                new = None if sub is None else f'{rec}layers.{idx - visual_split}.{sub}'
        elif include_text and key.startswith('transformer.resblocks.'):
            parts = key.split('.', 3)
            sub = _map_block(parts[3], _LAYER_TRANSFORMER)
            new = None if sub is None else f'text_encoder.transformer.{parts[2]}.{sub}'
        elif include_text and key in _TEXT_TOP:
            new = 'text_encoder.' + key
        if new is None:
            unmapped.append(key)
        else:
            out[new] = value
    return out, unmapped


def check_san_keys(converted: Mapping[str, torch.Tensor],
                   model_state: Mapping[str, torch.Tensor]) -> Dict[str, List[str]]:
    """Compare converted keys (and shapes) with a built SAN model's state dict.

    Returns:
        ``dict(missing=..., unexpected=..., shape_mismatch=...)``: CLIP-holding model keys
        (:data:`SAN_CLIP_PREFIXES`, minus :data:`SAN_OWN_KEYS`) not provided, converted keys the
        model does not have, and keys whose shapes differ.
    """
    wanted = {k for k in model_state
              if k.startswith(SAN_CLIP_PREFIXES) and not k.startswith(SAN_OWN_KEYS)}
    missing = sorted(wanted - set(converted))
    unexpected = sorted(set(converted) - set(model_state))
    shape = sorted(k for k in set(converted) & set(model_state)
                   if tuple(converted[k].shape) != tuple(model_state[k].shape))
    return dict(missing=missing, unexpected=unexpected, shape_mismatch=shape)


def _strip(state_dict: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def open_clip_state_dict_from_checkpoint(
        state_dict: Mapping[str, torch.Tensor],
        base_state_dict: Optional[Mapping[str, torch.Tensor]] = None,
        student_prefixes: Iterable[str] = ('backbone.visual.', 'visual.')
) -> Tuple[Dict[str, torch.Tensor], str]:
    """Assemble a full open_clip CLIP state dict from a checkpoint (+ a base for the text tower).

    Args:
        state_dict: unwrapped weights of an open_clip model (``visual.*`` + text) or of a DenseVLM
            work-dir checkpoint (student image tower under ``backbone.visual.*``; the P-VLM, head
            and other keys are ignored).
        base_state_dict: open_clip model whose text tower (all non-``visual.*`` keys) fills what
            ``state_dict`` lacks; its image tower is used only when ``state_dict`` has none.
        student_prefixes: where the image tower is looked for, in order.

    Returns:
        ``(clip_state_dict, source)`` with ``source`` naming where the image tower came from.

    Raises:
        ValueError: no image tower found (the message lists the top-level key prefixes).
    """
    visual, source = {}, ''
    for prefix in student_prefixes:
        visual = _strip(state_dict, prefix)
        if visual:
            source = prefix
            break
    if not visual and base_state_dict is not None:
        visual, source = _strip(base_state_dict, 'visual.'), 'base visual.'
    if not visual:
        tops = sorted({k.split('.')[0] for k in state_dict})[:10]
        raise ValueError('no image tower found: expected keys under '
                         f'{list(student_prefixes)}, got top-level prefixes {tops}')
    clip = {'visual.' + k: v for k, v in visual.items()}
    if source == 'visual.':  # a full open_clip checkpoint: keep its text tower
        clip.update({k: v for k, v in state_dict.items() if not k.startswith('visual.')})
    if base_state_dict is not None:
        for k, v in base_state_dict.items():
            if not k.startswith('visual.') and k not in clip:
                clip[k] = v
    return clip, source
