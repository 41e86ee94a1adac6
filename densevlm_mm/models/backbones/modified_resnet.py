"""Dense paths of open_clip's ``ModifiedResNet`` (OpenAI RN50...; spec §1.3).

Dense map = attention pool's ``forward_dense``: per layer4 location, add the (bicubic-resized)
position entry, then ``v_proj`` and ``c_proj`` (no attention mixing). The whole tower runs with grad
(fixes the inconsistent ``no_grad`` stem of the reference, spec §10.17); use ``unlocked_groups`` to
freeze parts.
"""
import logging
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor, nn

from .base import DenseAdapter, resample_pos_embed


class ModifiedResNetAdapter(DenseAdapter):
    """Stem + layer1..4 (stride 32) + ``AttentionPool2d`` (mean-token query, learned pos-emb)."""
    family = 'resnet'
    stride = 32
    group_unit = 'groups [stem, layer1..layer4]'
    index_unit = 'stages [layer1..layer4]'

    def __init__(self, visual: nn.Module) -> None:
        ap = visual.attnpool
        n = ap.positional_embedding.shape[0] - 1
        side = int(round(n ** 0.5))
        if side * side != n:
            raise ValueError(f'attention-pool position table of {n} cells is not square')
        self.grid = (side, side)
        self.embed_dim = ap.c_proj.out_features

    def num_features(self, visual: nn.Module) -> int:
        return visual.attnpool.v_proj.in_features

    def num_levels(self, visual: nn.Module) -> int:
        return 4

    def first_block(self, visual: nn.Module) -> nn.Module:
        return visual.layer1

    def groups(self, visual: nn.Module) -> List[nn.Module]:
        stem = nn.ModuleList([visual.conv1, visual.bn1, visual.conv2, visual.bn2, visual.conv3,
                              visual.bn3])
        return [stem, visual.layer1, visual.layer2, visual.layer3, visual.layer4]

    def set_grad_checkpointing(self, visual: nn.Module, enable: bool) -> None:
        if enable:
            print_log('grad_checkpointing is not supported for ModifiedResNet (BatchNorm '
                      'statistics would update twice); ignored', logger='current',
                      level=logging.WARNING)

    # ---------------------------------------------------------------------------------------
    def _stages(self, visual: nn.Module, x: Tensor, n: int = 4) -> List[Tensor]:
        x = visual.stem(x)
        outs = []
        for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4)[:n]:
            x = layer(x)
            outs.append(x)
        return outs

    def _dense_head(self, visual: nn.Module, x: Tensor) -> Tensor:
        """layer4 map ``[B,C,h,w]`` -> per-location ``c_proj(v_proj(x + pos))`` ``[B,D,h,w]``."""
        b, c, h, w = x.shape
        ap = visual.attnpool
        pos = resample_pos_embed(ap.positional_embedding, self.grid, (h, w), num_prefix=1)
        t = x.flatten(2).transpose(1, 2) + pos[1:].to(x.dtype)  # mean token dropped: per-location
        t = ap.c_proj(ap.v_proj(t))
        return t.reshape(b, h, w, -1).permute(0, 3, 1, 2)

    def encode_image(self, visual: nn.Module, x: Tensor, ckpt: bool) -> Tensor:
        x = self._stages(visual, x)[-1]
        ap = visual.attnpool
        h, w = x.shape[-2:]
        t = x.flatten(2).permute(2, 0, 1)  # (HW)NC
        t = torch.cat([t.mean(dim=0, keepdim=True), t], dim=0)
        pos = resample_pos_embed(ap.positional_embedding, self.grid, (h, w), num_prefix=1)
        t = t + pos[:, None, :].to(t.dtype)
        out, _ = F.multi_head_attention_forward(
            query=t[:1], key=t, value=t, embed_dim_to_check=t.shape[-1],
            num_heads=ap.num_heads, q_proj_weight=ap.q_proj.weight,
            k_proj_weight=ap.k_proj.weight, v_proj_weight=ap.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([ap.q_proj.bias, ap.k_proj.bias, ap.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.,
            out_proj_weight=ap.c_proj.weight, out_proj_bias=ap.c_proj.bias,
            use_separate_proj_weight=True, training=ap.training, need_weights=False)
        return out[0]

    def run(self, visual: nn.Module, x: Tensor, indices: Sequence[int], with_dense: bool,
            ckpt: bool) -> Tuple[List[Tensor], Optional[Tensor]]:
        """Stages ``layer1..4`` (indices 0..3) and the dense map from the same pass."""
        stop = 4 if with_dense else (max(indices) + 1 if indices else 0)
        if stop == 0:
            return [], None
        outs = self._stages(visual, x, stop)
        dense = self._dense_head(visual, outs[-1]) if with_dense else None
        return [outs[i] for i in indices], dense
