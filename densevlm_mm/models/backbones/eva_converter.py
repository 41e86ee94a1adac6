"""Vendored EVA-CLIP state dict <-> open_clip ``EVA02-*`` (timm trunk) names (spec §9.2).

Pure key renaming, no numerics change: ``visual.<eva name>`` <-> ``visual.trunk.<timm name>``;
keys outside ``visual.`` (``text.*``, ``logit_scale``) pass unchanged. Vendored RoPE buffers are
dropped going to open_clip and not re-created going back (the vendored loader recomputes and
deletes them; its models hold them as buffers computed at construction).
"""
import re
from typing import Dict, List, Tuple

from torch import Tensor

#: (vendored pattern under ``visual.``, timm replacement under ``visual.trunk.``), first match wins
EVA_TO_TIMM: List[Tuple[str, str]] = [
    (r'^(patch_embed\.proj\.(?:weight|bias))$', r'\1'),
    (r'^(cls_token|pos_embed)$', r'\1'),
    (r'^(blocks\.\d+)\.(norm[12]\.(?:weight|bias))$', r'\1.\2'),
    (r'^(blocks\.\d+)\.(gamma_[12])$', r'\1.\2'),
    (r'^(blocks\.\d+)\.attn\.([qkv]_proj\.weight)$', r'\1.attn.\2'),
    (r'^(blocks\.\d+)\.attn\.q_bias$', r'\1.attn.q_proj.bias'),
    (r'^(blocks\.\d+)\.attn\.v_bias$', r'\1.attn.v_proj.bias'),
    (r'^(blocks\.\d+)\.attn\.inner_attn_ln\.(weight|bias)$', r'\1.attn.norm.\2'),
    (r'^(blocks\.\d+)\.attn\.proj\.(weight|bias)$', r'\1.attn.proj.\2'),
    (r'^(blocks\.\d+)\.mlp\.w1\.(weight|bias)$', r'\1.mlp.fc1_g.\2'),
    (r'^(blocks\.\d+)\.mlp\.w2\.(weight|bias)$', r'\1.mlp.fc1_x.\2'),
    (r'^(blocks\.\d+)\.mlp\.w3\.(weight|bias)$', r'\1.mlp.fc2.\2'),
    (r'^(blocks\.\d+)\.mlp\.ffn_ln\.(weight|bias)$', r'\1.mlp.norm.\2'),
    (r'^((?:fc_)?norm\.(?:weight|bias))$', r'\1'),
    (r'^(head\.(?:weight|bias))$', r'\1'),
]
_RULES = [(re.compile(p), r) for p, r in EVA_TO_TIMM]
_ROPE = re.compile(r'(^|\.)rope\.|freqs_cos|freqs_sin')


def convert_eva_clip_state_dict(state_dict: Dict[str, Tensor]
                                ) -> Tuple[Dict[str, Tensor], List[str]]:
    """Map vendored EVA-CLIP keys to open_clip EVA02 keys.

    Args:
        state_dict: raw vendored state dict (``visual.*`` EVA names, ``text.*``, ``logit_scale``;
            any ``module.`` prefix already stripped).

    Returns:
        ``(new_state_dict, unmapped)``: the renamed dict (same tensors) and the ``visual.*`` keys
        no rule maps (left out of the new dict). RoPE buffers are dropped silently.
    """
    out: Dict[str, Tensor] = {}
    unmapped: List[str] = []
    for key, value in state_dict.items():
        if not key.startswith('visual.'):
            out[key] = value
            continue
        sub = key[len('visual.'):]
        if _ROPE.search(sub):
            continue
        if sub.startswith('trunk.'):  # already open_clip layout
            out[key] = value
            continue
        for pattern, repl in _RULES:
            if pattern.match(sub):
                out['visual.trunk.' + pattern.sub(repl, sub)] = value
                break
        else:
            unmapped.append(key)
    return out, unmapped


#: (timm pattern under ``visual.trunk.``, vendored replacement under ``visual.``), first match wins
TIMM_TO_EVA: List[Tuple[str, str]] = [
    (r'^(patch_embed\.proj\.(?:weight|bias))$', r'\1'),
    (r'^(cls_token|pos_embed)$', r'\1'),
    (r'^(blocks\.\d+)\.(norm[12]\.(?:weight|bias))$', r'\1.\2'),
    (r'^(blocks\.\d+)\.(gamma_[12])$', r'\1.\2'),
    (r'^(blocks\.\d+)\.attn\.([qkv]_proj\.weight)$', r'\1.attn.\2'),
    (r'^(blocks\.\d+)\.attn\.q_proj\.bias$', r'\1.attn.q_bias'),
    (r'^(blocks\.\d+)\.attn\.v_proj\.bias$', r'\1.attn.v_bias'),
    (r'^(blocks\.\d+)\.attn\.norm\.(weight|bias)$', r'\1.attn.inner_attn_ln.\2'),
    (r'^(blocks\.\d+)\.attn\.proj\.(weight|bias)$', r'\1.attn.proj.\2'),
    (r'^(blocks\.\d+)\.mlp\.fc1_g\.(weight|bias)$', r'\1.mlp.w1.\2'),
    (r'^(blocks\.\d+)\.mlp\.fc1_x\.(weight|bias)$', r'\1.mlp.w2.\2'),
    (r'^(blocks\.\d+)\.mlp\.fc2\.(weight|bias)$', r'\1.mlp.w3.\2'),
    (r'^(blocks\.\d+)\.mlp\.norm\.(weight|bias)$', r'\1.mlp.ffn_ln.\2'),
    (r'^((?:fc_)?norm\.(?:weight|bias))$', r'\1'),
    (r'^(head\.(?:weight|bias))$', r'\1'),
]
_REVERSE_RULES = [(re.compile(p), r) for p, r in TIMM_TO_EVA]


def convert_open_clip_to_eva_clip_state_dict(state_dict: Dict[str, Tensor]
                                             ) -> Tuple[Dict[str, Tensor], List[str]]:
    """Map open_clip ``EVA02-*`` (timm trunk) keys back to the vendored EVA-CLIP layout.

    Args:
        state_dict: open_clip state dict (``visual.trunk.*``, ``text.*``, ``logit_scale``; any
            ``module.`` prefix already stripped).

    Returns:
        ``(new_state_dict, unmapped)``: the renamed dict (same tensors) and every ``visual.*`` key
        that has no vendored counterpart (e.g. a ``k_proj.bias``, which the vendored attention
        does not have, or an image tower that is not a timm EVA trunk); those are left out.
    """
    out: Dict[str, Tensor] = {}
    unmapped: List[str] = []
    for key, value in state_dict.items():
        if not key.startswith('visual.'):
            out[key] = value
            continue
        if not key.startswith('visual.trunk.'):
            unmapped.append(key)
            continue
        sub = key[len('visual.trunk.'):]
        for pattern, repl in _REVERSE_RULES:
            if pattern.match(sub):
                out['visual.' + pattern.sub(repl, sub)] = value
                break
        else:
            unmapped.append(key)
    return out, unmapped
