"""CLIPSelf's released F-ViT checkpoints (mmdet 2.28 key layout) → this package's :class:`FViT`.

Every source key is accounted for: renamed, dropped with a reason, or reported as unmapped.

=========================================================  ======================================
mmdet 2.x (CLIPSelf ``F-ViT``)                             here (mmdet 3.3)
=========================================================  ======================================
``backbone.visual.<EVA-CLIP name>``                        ``backbone.visual.trunk.<timm name>``
``backbone.interpolate1.{0,1,3}.*``                        ``neck.0.upsample_4x.{0,1,3}.*``
``backbone.interpolate2.0.*``                              ``neck.0.upsample_2x.0.*``
``neck.{lateral,fpn}_convs.*`` (FPN)                       ``neck.1.{lateral,fpn}_convs.*``
``rpn_head.*``, ``roi_head.mask_head.*``                   unchanged
``roi_head.bbox_head.{shared_convs,shared_fcs,cls_fcs,``   unchanged
``reg_fcs,fc_reg}.*``
``roi_head.bbox_head.all_embeddings`` ``[D, C+1]``         ``…fc_cls.class_embeddings`` ``[D, C]``
                                                           + ``…fc_cls.bg_embedding`` ``[D, 1]``
``roi_head.bbox_head.bg_embedding`` (``learn_bg``)         ``…fc_cls.bg_embedding``
``roi_head.bbox_head.detect_temperature``                  ``…fc_cls.temperature``
``roi_head.bbox_head.fc_cls.*``                            dropped (built but never used)
EVA RoPE buffers                                           dropped (recomputed)
=========================================================  ======================================
"""
import re
from typing import Dict, List, Tuple

from torch import Tensor

from densevlm_mm.models.backbones.eva_converter import convert_eva_clip_state_dict

_RENAMES: List[Tuple[str, str]] = [
    (r'^backbone\.interpolate1\.(\d+)\.(.+)$', r'neck.0.upsample_4x.\1.\2'),
    (r'^backbone\.interpolate2\.0\.(.+)$', r'neck.0.upsample_2x.0.\1'),
    (r'^neck\.((?:lateral_convs|fpn_convs)\..+)$', r'neck.1.\1'),
    (r'^(rpn_head\.(?:rpn_conv|rpn_cls|rpn_reg)\..+)$', r'\1'),
    (r'^(roi_head\.mask_head\..+)$', r'\1'),
    (r'^(roi_head\.bbox_head\.(?:shared_convs|shared_fcs|cls_convs|cls_fcs|reg_convs|reg_fcs'
     r'|fc_reg)\..+)$', r'\1'),
    (r'^roi_head\.bbox_head\.bg_embedding$', r'roi_head.bbox_head.fc_cls.bg_embedding'),
    (r'^roi_head\.bbox_head\.detect_temperature$', r'roi_head.bbox_head.fc_cls.temperature'),
]
_RULES = [(re.compile(p), r) for p, r in _RENAMES]
_DROPS = [(re.compile(r'^roi_head\.bbox_head\.fc_cls\.(weight|bias)$'),
           'unused linear classifier of ConvFCBBoxHead (the text embeddings classify)')]


def convert_fvit_mmdet2_state_dict(state_dict: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], dict]:
    """Rename an mmdet-2.x F-ViT state dict.

    Args:
        state_dict: the checkpoint's ``state_dict`` (wrapper and ``module.`` already removed).

    Returns:
        ``(new_state_dict, report)``; ``report`` has ``renamed`` (old → new), ``dropped``
        (key → reason) and ``unmapped`` (keys no rule knows; left out). Every input key is in
        exactly one of them.
    """
    out: Dict[str, Tensor] = {}
    report: dict = dict(renamed={}, dropped={}, unmapped=[])
    for key, value in state_dict.items():  # the CLIP tower: the EVA-CLIP -> open_clip renaming
        if not key.startswith('backbone.visual.'):
            continue
        one, unmapped = convert_eva_clip_state_dict({key[len('backbone.'):]: value})
        if unmapped:
            report['unmapped'].append(key)
        elif not one:
            report['dropped'][key] = 'EVA RoPE buffer (recomputed by the model)'
        else:
            (new_sub, ) = one.keys()
            out['backbone.' + new_sub] = value
            report['renamed'][key] = 'backbone.' + new_sub
    for key, value in state_dict.items():
        if key.startswith('backbone.visual.'):
            continue
        if key == 'roi_head.bbox_head.all_embeddings':
            if value.dim() != 2 or value.shape[1] < 2:
                raise ValueError(f'{key} must be [D, C+1], got {tuple(value.shape)}')
            out['roi_head.bbox_head.fc_cls.class_embeddings'] = value[:, :-1].contiguous()
            bg_key = 'roi_head.bbox_head.fc_cls.bg_embedding'
            if 'roi_head.bbox_head.bg_embedding' not in state_dict:
                out[bg_key] = value[:, -1:].contiguous()
            report['renamed'][key] = ('roi_head.bbox_head.fc_cls.class_embeddings + '
                                      'roi_head.bbox_head.fc_cls.bg_embedding (last column)')
            continue
        reason = next((r for p, r in _DROPS if p.match(key)), None)
        if reason is not None:
            report['dropped'][key] = reason
            continue
        for pattern, repl in _RULES:
            if pattern.match(key):
                new = pattern.sub(repl, key)
                out[new] = value
                report['renamed'][key] = new
                break
        else:
            report['unmapped'].append(key)
    return out, report
