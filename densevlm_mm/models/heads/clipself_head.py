"""The head of the CLIPSelf baseline: region features vs. the teacher's crop embeddings."""
from typing import Dict, Optional

from mmengine.model import BaseModule
from torch import Tensor

from densevlm_mm.registry import MODELS


@MODELS.register_module()
class CLIPSelfHead(BaseModule):
    """Feature distillation of CLIPSelf (spec §4.1); it holds no class embeddings.

    Args:
        loss: loss config, ``dict(type='CLIPSelfLoss', weight=1.0)`` by default.
    """

    def __init__(self, loss: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.loss_module = MODELS.build(loss if loss is not None else dict(type='CLIPSelfLoss'))

    def loss(self, student_feats: Tensor, teacher_feats: Tensor) -> Dict[str, Tensor]:
        """
        Args:
            student_feats: ``[K, D]`` RoI features of the student's dense map.
            teacher_feats: ``[K, D]`` the frozen teacher's embeddings of the region crops.
        """
        return self.loss_module(student_feats, teacher_feats)
