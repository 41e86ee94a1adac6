"""Dense paths of open_clip's ``TimmModel`` over a timm ``ConvNeXt`` trunk (spec §1.4, dense path).

Dense map: ``forward_features`` (stride 32) -> the head's LayerNorm2d per location -> (pre-logits,
dropout) -> the CLIP projection Linear per location. This path is reachable for region and mask
pooling here (it is dead code in the reference, spec §10.16).
"""
from typing import List, Optional, Sequence, Tuple

from torch import Tensor, nn

from .base import DenseAdapter


class ConvNeXtAdapter(DenseAdapter):
    """open_clip ``TimmModel`` with a timm ``ConvNeXt`` trunk and a ``drop + proj`` / mlp head."""
    family = 'convnext'
    group_unit = 'groups [stem, stage1..stage4]'
    index_unit = 'stages'

    def __init__(self, visual: nn.Module) -> None:
        trunk = visual.trunk
        if 'pool' in dict(visual.head.named_children()):
            raise NotImplementedError('ConvNeXt towers with attention pooling have no dense path')
        if not hasattr(trunk.head, 'norm'):
            raise NotImplementedError('expected timm NormMlpClassifierHead on the ConvNeXt trunk')
        self.stride = int(trunk.feature_info[-1]['reduction'])
        self.embed_dim = None
        for m in visual.head.modules():
            if isinstance(m, nn.Linear):
                self.embed_dim = m.out_features
        if self.embed_dim is None:
            raise NotImplementedError('ConvNeXt tower without a projection head (timm_proj)')

    def num_features(self, visual: nn.Module) -> int:
        return visual.trunk.num_features

    def num_levels(self, visual: nn.Module) -> int:
        return len(visual.trunk.stages)

    def first_block(self, visual: nn.Module) -> nn.Module:
        return visual.trunk.stages[0]

    def groups(self, visual: nn.Module) -> List[nn.Module]:
        return [visual.trunk.stem, *visual.trunk.stages]

    def set_grad_checkpointing(self, visual: nn.Module, enable: bool) -> None:
        visual.trunk.set_grad_checkpointing(enable)  # timm checkpoints inside each stage

    def _dense_head(self, visual: nn.Module, x: Tensor) -> Tensor:
        """Last-stage map -> ``norm_pre`` -> head LayerNorm2d -> projection, per location."""
        trunk = visual.trunk
        x = trunk.head.norm(trunk.norm_pre(x))  # LayerNorm2d per location
        x = x.permute(0, 2, 3, 1)  # NHWC
        x = visual.head(trunk.head.drop(trunk.head.pre_logits(x)))
        return x.permute(0, 3, 1, 2)

    def encode_image(self, visual: nn.Module, x: Tensor, ckpt: bool) -> Tensor:
        return visual(x)

    def run(self, visual: nn.Module, x: Tensor, indices: Sequence[int], with_dense: bool,
            ckpt: bool) -> Tuple[List[Tensor], Optional[Tensor]]:
        """Stem, stages (indices 0..3, the ``forward_features`` path) and the dense map, one pass.

        timm's per-stage ``grad_checkpointing`` flags (set by :meth:`set_grad_checkpointing`) apply
        inside each stage.
        """
        trunk = visual.trunk
        n = len(trunk.stages)
        stop = n if with_dense else (max(indices) + 1 if indices else 0)
        if stop == 0:
            return [], None
        x = trunk.stem(x)
        outs = []
        for stage in trunk.stages[:stop]:
            x = stage(x)
            outs.append(x)
        dense = self._dense_head(visual, outs[-1]) if with_dense else None
        return [outs[i] for i in indices], dense
