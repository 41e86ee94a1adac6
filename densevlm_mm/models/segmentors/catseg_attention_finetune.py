"""CAT-Seg's CLIP fine-tuning: only the attention query / value projection weights train (spec §11.2).

open_clip towers use ``nn.MultiheadAttention`` with one fused ``in_proj_weight [3C, C]``; a gradient
mask on its key rows would not stop AdamW's decoupled weight decay from shrinking them. So the fused
weight is split into torch's own separate-projection layout (``q_proj_weight``, ``k_proj_weight``,
``v_proj_weight``, ``_qkv_same_embed_dim=False``, which ``nn.MultiheadAttention.forward`` supports
natively); the key weight is then a parameter with ``requires_grad=False`` that the optimizer never
touches. timm EVA attention with separate ``q_proj`` / ``k_proj`` / ``v_proj`` needs no split.
Biases, keys, output projections, MLPs, norms and embeddings stay frozen.
"""
from typing import List

from torch import nn


def split_fused_qkv(attn: nn.MultiheadAttention) -> None:
    """Replace ``in_proj_weight [3C, C]`` by ``q/k/v_proj_weight [C, C]`` (same values, in place).

    The new parameters inherit the fused one's ``requires_grad``; the fused ``in_proj_bias`` is
    kept as it is.
    """
    if not attn._qkv_same_embed_dim:
        return
    fused = attn.in_proj_weight
    weight, grad = fused.detach(), fused.requires_grad
    c = attn.embed_dim
    attn.register_parameter('in_proj_weight', None)
    for i, name in enumerate(('q_proj_weight', 'k_proj_weight', 'v_proj_weight')):
        setattr(attn, name, nn.Parameter(weight[i * c:(i + 1) * c].clone(), requires_grad=grad))
    attn._qkv_same_embed_dim = False


def enable_qv_finetuning(tower: nn.Module, what: str = 'tower') -> List[str]:
    """Freeze ``tower`` except the attention query / value projection weights.

    Args:
        tower: an open_clip image or text tower (``nn.MultiheadAttention`` blocks) or an open_clip
            ``TimmModel`` over a timm EVA trunk (``EvaAttention`` with separate projections).
        what: name used in error messages.

    Returns:
        Names (relative to ``tower``) of the parameters left trainable.

    Raises:
        NotImplementedError: attention layouts whose q/v weights are not separable here (timm fused
            ``qkv``, open_clip's custom ``Attention``) or a tower without any attention.
    """
    from timm.models.eva import EvaAttention
    tower.requires_grad_(False)
    trainable = []
    for name, module in tower.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            split_fused_qkv(module)
            pairs = (('q_proj_weight', module.q_proj_weight), ('v_proj_weight',
                                                                module.v_proj_weight))
        elif isinstance(module, EvaAttention):
            if module.qkv is not None:
                raise NotImplementedError(
                    f'{what}: timm EvaAttention {name!r} uses a fused qkv projection; CAT-Seg q/v '
                    'fine-tuning needs qkv_fused=False (as in the EVA02-CLIP timm models).')
            pairs = (('q_proj.weight', module.q_proj.weight), ('v_proj.weight',
                                                                module.v_proj.weight))
        elif type(module).__name__ == 'Attention' and hasattr(module, 'in_proj_weight'):
            raise NotImplementedError(
                f'{what}: open_clip custom Attention {name!r} (fused in_proj_weight) is not '
                'supported for CAT-Seg q/v fine-tuning; use a tower with nn.MultiheadAttention.')
        else:
            continue
        for pname, param in pairs:
            param.requires_grad_(True)
            trainable.append(f'{name}.{pname}' if name else pname)
    if not trainable:
        raise NotImplementedError(f'{what}: no attention layer found for q/v fine-tuning')
    return trainable
