"""The frozen P-VLM that retrieves a category for every region (paper §3.2, spec §3.2 step 2)."""
from typing import Dict, List, Optional, Union

import torch
from torch import Tensor, nn

from densevlm_mm.registry import MODELS
from densevlm_mm.text_embeddings import load_text_embeddings
from densevlm_mm.vocabulary import Vocabulary

from .frozen_teacher import FrozenTeacher
from .losses.decoupled_align_loss import retrieve

_DTYPES = dict(fp32=torch.float32, bf16=torch.bfloat16, fp16=torch.float16)


@MODELS.register_module()
class RegionRetriever(FrozenTeacher):
    """A frozen CLIP image encoder + its class embeddings, returning region targets.

    The P-VLM never trains: its parameters have ``requires_grad=False``, it stays in eval mode,
    runs under ``no_grad`` (optionally in bf16/fp16 autocast), is left out of DDP (see
    :class:`DenseVLM`) and out of checkpoints (it is rebuilt from its own file).

    Args:
        backbone: config (or instance) of the P-VLM :class:`DenseVLMBackbone`.
        text_embeddings: file from ``tools/text_embeddings.py`` made with the P-VLM's text tower.
        vocabulary: optional vocabulary to check the file against.
        tau: retrieval temperature.
        precision: ``'fp32'``, ``'bf16'`` or ``'fp16'`` autocast for the teacher forward.
        normalize_text: L2-normalise the class rows before retrieval.
        reference_thing_count: reproduce the reference's off-by-one thing split: classes with
            index ``< reference_thing_count - 1`` are things (spec §10.1; 204 for the 316 list).
            ``None`` (default) uses the explicit per-class ``is_thing`` of the file.
    """

    def __init__(self, backbone: Union[dict, nn.Module], text_embeddings: str,
                 vocabulary: Optional[Union[str, Vocabulary]] = None, tau: float = 0.01,
                 precision: str = 'fp32', normalize_text: bool = True,
                 reference_thing_count: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if precision not in _DTYPES:
            raise ValueError(f'precision must be one of {sorted(_DTYPES)}, got {precision!r}')
        super().__init__(backbone, init_cfg=init_cfg)
        te = load_text_embeddings(text_embeddings, vocabulary=vocabulary,
                                  embed_dim=self.backbone.embed_dim)
        self.class_names: List[str] = list(te.class_names)
        is_thing = te.is_thing.clone()
        if reference_thing_count is not None:
            if not 0 < reference_thing_count <= len(is_thing):
                raise ValueError(f'reference_thing_count={reference_thing_count} is not in '
                                 f'1..{len(is_thing)}')
            is_thing = torch.arange(len(is_thing)) < reference_thing_count - 1
        self.register_buffer('text', te.embeddings.float(), persistent=False)
        self.register_buffer('class_is_thing', is_thing, persistent=False)
        self.tau, self.precision, self.normalize_text = tau, precision, normalize_text

    @torch.no_grad()
    def forward(self, images: Tensor, boxes: List[Tensor]) -> Dict[str, Tensor]:
        """Teacher targets of the regions.

        Args:
            images: ``[B, 3, H, W]`` normalised images.
            boxes: per image ``[K_i, 4]`` xyxy in input pixels.

        Returns:
            ``feats [K, Dt]`` (pooled, not normalised), ``labels [K]``, ``conf [K]``,
            ``region_is_thing [K]``, ``text [C, Dt]``, ``class_is_thing [C]``.
        """
        enabled = self.precision != 'fp32'
        with torch.autocast(images.device.type, dtype=_DTYPES[self.precision], enabled=enabled):
            dense = self.backbone.dense_features(images)
            feats = self.backbone.roi_features(dense, boxes)
        feats = feats.float()
        _, conf, labels = retrieve(feats, self.text, self.tau, self.normalize_text)
        return dict(feats=feats, labels=labels, conf=conf,
                    region_is_thing=self.class_is_thing[labels], text=self.text,
                    class_is_thing=self.class_is_thing)
