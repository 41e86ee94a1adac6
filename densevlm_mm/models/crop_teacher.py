"""A frozen CLIP that embeds each region crop as a whole image (the CLIPSelf teacher, spec §4.1)."""
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from densevlm_mm.registry import MODELS
from densevlm_mm.utils.checks import check_number

from .data_preprocessor import CLIP_MEAN, CLIP_STD
from .frozen_teacher import FrozenTeacher


@MODELS.register_module()
class CropTeacher(FrozenTeacher):
    """Global image embeddings of region crops from a frozen image encoder.

    For CLIPSelf the teacher is a second copy of the student's initial weights (same
    ``model_name`` and ``pretrained``). Frozen, eval mode, ``no_grad``, out of DDP and out of
    checkpoints, like :class:`RegionRetriever`.

    Args:
        backbone: :class:`DenseVLMBackbone` config or instance.
        mean / std: normalisation of the uint8 crops (CLIP statistics on the 0..255 scale).
        chunk_size: crops encoded per forward, >= 1 (bounds memory for 36 crops × batch).
    """

    def __init__(self, backbone: Union[dict, nn.Module], mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD, chunk_size: int = 256,
                 init_cfg: Optional[dict] = None) -> None:
        chunk_size = check_number(chunk_size, 'chunk_size', type(self).__name__, low=1,
                                  integer=True, example=256)
        super().__init__(backbone, init_cfg=init_cfg)
        self.register_buffer('mean', torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.chunk_size = chunk_size

    @torch.no_grad()
    def forward(self, crops: Tensor) -> Tensor:
        """``crops [K, 3, S, S]`` uint8 (or float 0..255) → embeddings ``[K, D]``."""
        if crops.shape[0] == 0:
            return crops.new_zeros((0, self.backbone.embed_dim), dtype=torch.float32)
        out = []
        for chunk in crops.split(self.chunk_size):
            x = (chunk.float() - self.mean) / self.std
            out.append(self.backbone.encode_image(x).float())
        return torch.cat(out)
