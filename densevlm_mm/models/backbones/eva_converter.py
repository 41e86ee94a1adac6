"""Vendored EVA-CLIP state dict -> open_clip ``EVA02-*`` (timm trunk) names (spec §9.2).

Pure key renaming, no numerics change: ``visual.<eva name>`` -> ``visual.trunk.<timm name>``;
keys outside ``visual.`` (``text.*``, ``logit_scale``) pass unchanged; RoPE buffers are dropped.
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
