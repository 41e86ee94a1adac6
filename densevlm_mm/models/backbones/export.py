"""Export an aligned image tower to a plain open_clip checkpoint ("use the aligned model
elsewhere").

The full CLIP state dict = the aligned image tower (from a work-dir checkpoint of this project or
any file :func:`~.weights.load_image_tower` reads) + the base checkpoint's text tower,
``logit_scale`` and everything else, in open_clip's own key layout, so that stock
``open_clip.create_model(NAME, pretrained=OUT)`` loads it strictly and its ``encode_image``
equals the aligned backbone's.
"""
import os
import os.path as osp
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .factory import create_clip, load_clip_weights
from .weights import load_image_tower


def aligned_open_clip_state_dict(checkpoint: str, base: str, model_name: str,
                                 prefix: Optional[str] = None,
                                 model_cfg: Optional[dict] = None
                                 ) -> Tuple[Dict[str, Tensor], dict]:
    """Full open_clip state dict with the aligned image tower.

    Args:
        checkpoint: the aligned weights (e.g. ``work_dirs/<exp>/epoch_6.pth``; the student
            ``backbone.visual.*`` is found automatically).
        base: the full CLIP checkpoint the student started from (open_clip file or EVA-CLIP
            release) providing the text tower and ``logit_scale``.
        model_name: open_clip model name of both.
        prefix: key prefix of the image tower in ``checkpoint`` (default: automatic).
        model_cfg: open_clip config dict instead of the name's.

    Returns:
        ``(state_dict, info)``: fp32 tensors keyed like ``open_clip.create_model(model_name)``;
        ``info`` = ``dict(source=..., ignored=[...], num_visual=..., num_other=...)``.

    Raises:
        CheckpointError: the base has no text tower or either file does not fit ``model_name``.
    """
    clip, _ = create_clip(model_name, model_cfg=model_cfg)
    load_clip_weights(clip, base, require_text=True)
    info = load_image_tower(clip.visual, checkpoint, model_name=model_name, prefix=prefix)
    state_dict = {k: v.detach().contiguous() for k, v in clip.state_dict().items()}
    info.update(num_visual=sum(k.startswith('visual.') for k in state_dict),
                num_other=sum(not k.startswith('visual.') for k in state_dict))
    return state_dict, info


def export_open_clip(checkpoint: str, base: str, model_name: str, out: str,
                     prefix: Optional[str] = None) -> dict:
    """Write :func:`aligned_open_clip_state_dict` to ``out`` (``.safetensors`` or torch file).

    Returns:
        the ``info`` dict with ``out`` added.
    """
    state_dict, info = aligned_open_clip_state_dict(checkpoint, base, model_name, prefix)
    parent = osp.dirname(osp.abspath(out))
    os.makedirs(parent, exist_ok=True)
    if out.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file(state_dict, out)
    else:
        torch.save(state_dict, out)
    info['out'] = out
    return info


__all__ = ['aligned_open_clip_state_dict', 'export_open_clip']
