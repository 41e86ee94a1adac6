"""Data preprocessor: CLIP normalisation and batching (mmpretrain style)."""
from typing import Optional, Sequence

from mmengine.model import ImgDataPreprocessor

from densevlm_mm.registry import MODELS

# OpenAI CLIP statistics on the 0..255 scale (also used by EVA-CLIP and the reference).
CLIP_MEAN = (0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255)
CLIP_STD = (0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255)


@MODELS.register_module()
class DenseVLMDataPreprocessor(ImgDataPreprocessor):
    """Stack ``[3, H, W]`` uint8 RGB images, normalise with CLIP mean/std, pad to the batch shape.

    Images arrive already padded by :class:`ResizeLongestPad` (black before normalisation, like
    the reference), so the batch padding only matters for pipelines without it.
    """

    def __init__(self, mean: Optional[Sequence[float]] = CLIP_MEAN,
                 std: Optional[Sequence[float]] = CLIP_STD, pad_size_divisor: int = 1,
                 pad_value: float = 0, bgr_to_rgb: bool = False, rgb_to_bgr: bool = False,
                 non_blocking: bool = False) -> None:
        super().__init__(mean=mean, std=std, pad_size_divisor=pad_size_divisor,
                         pad_value=pad_value, bgr_to_rgb=bgr_to_rgb, rgb_to_bgr=rgb_to_bgr,
                         non_blocking=non_blocking)
