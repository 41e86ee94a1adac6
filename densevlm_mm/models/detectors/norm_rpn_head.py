"""RPN head whose conv stack is normalised (F-ViT's OV-LVIS RPN, spec §8.2)."""
from typing import Optional

from mmcv.cnn import ConvModule
from mmdet.models.dense_heads import RPNHead
from torch import nn

from densevlm_mm.registry import MODELS


@MODELS.register_module()
class NormRPNHead(RPNHead):
    """mmdet's ``RPNHead`` with ``norm_cfg`` in its ``num_convs`` 3x3 convs (conv → norm → ReLU).

    Args:
        norm_cfg: e.g. ``dict(type='SyncBN')``; ``None`` gives mmdet's ``RPNHead``.
        **kwargs: ``RPNHead`` arguments.
    """

    def __init__(self, *args, norm_cfg: Optional[dict] = None, **kwargs) -> None:
        self.rpn_norm_cfg = norm_cfg
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        if self.rpn_norm_cfg is None:
            return
        convs = [ConvModule(self.in_channels if i == 0 else self.feat_channels,
                            self.feat_channels, 3, padding=1, norm_cfg=self.rpn_norm_cfg,
                            inplace=False) for i in range(max(self.num_convs, 1))]
        self.rpn_conv = nn.Sequential(*convs)
