"""The baselines of paper Tables 1 and 11 as thin algorithms (spec §4).

* feature KD (CLIPSelf): :class:`CLIPSelf` — student RoI features vs. the frozen initial model's
  global embedding of each region crop (cosine);
* logits KD: :class:`DenseVLM` with ``head.loss=dict(type='LogitsKDLoss')`` — the P-VLM's
  all-class distribution, no threshold, no thing/stuff decoupling;
* RegionCLIP-style: :class:`RegionCLIP` — BCE of pseudo-labelled proposals against noun
  embeddings.
"""
from typing import Dict, List, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmpretrain.models.selfsup.base import BaseSelfSupervisor
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from densevlm_mm.registry import MODELS
from densevlm_mm.text_embeddings import load_text_embeddings

from .densevlm import DenseVLM


@MODELS.register_module()
class CLIPSelf(DenseVLM):
    """CLIPSelf feature distillation: RoI features of the student's dense map are pulled
    towards the teacher's global embedding of the same region's crop.

    Args:
        backbone: the student :class:`DenseVLMBackbone`.
        target_generator: a :class:`CropTeacher` (the student's initial weights).
        head: the loss, e.g. ``dict(type='CLIPSelfLoss')``.
        Other arguments as :class:`DenseVLM` (evaluation embeddings, data preprocessor).
    Data samples need ``grid_boxes`` and ``region_crops`` (pipeline ``ResizeLongestPad(
    keep_ori=True)`` → ``SampleGridRegions`` → ``CropGridRegions``).
    """

    def __init__(self, backbone, target_generator, head, **kwargs) -> None:
        super().__init__(backbone=backbone, target_generator=target_generator, head=head,
                         **kwargs)

    def loss(self, inputs: Tensor, data_samples: List[DataSample]) -> Dict[str, Tensor]:
        boxes = [sample.grid_boxes for sample in data_samples]
        dense = self.backbone.dense_features(inputs)  # [B, D, h, w]
        student = self.backbone.roi_features(dense, boxes)  # [K, D]
        crops = torch.cat([sample.region_crops for sample in data_samples])  # [K, 3, S, S]
        teacher = self.target_generator(crops)  # [K, D], frozen
        return self.head(student, teacher)


@MODELS.register_module()
class RegionCLIP(DenseVLM):
    """RegionCLIP-style region-noun alignment on pseudo-labelled proposals (spec §4.2).

    Args:
        backbone: the student.
        head: ``dict(type='RegionCLIPLoss', num_sampled_classes=100)``.
        noun_embeddings: ``[N, D]`` noun embeddings (``.pt`` from ``tools/text_embeddings.py`` or
            a bare ``.npy``), rows in the order of the pseudo labels.
        logit_scale: the fixed CLIP temperature (the reference uses the clamped, detached
            ``logit_scale.exp()`` ≈ 100).
    Data samples need ``region_boxes`` and ``region_labels`` (:class:`CocoPseudoRegionDataset`).
    """

    def __init__(self, backbone, head, noun_embeddings: str, logit_scale: float = 100.0,
                 **kwargs) -> None:
        super().__init__(backbone=backbone, head=head, **kwargs)
        if noun_embeddings.endswith('.npy'):
            nouns = torch.from_numpy(np.load(noun_embeddings)).float()
        else:
            nouns = load_text_embeddings(noun_embeddings).embeddings
        if nouns.ndim != 2 or nouns.shape[1] != self.backbone.embed_dim:
            raise ValueError(f'{noun_embeddings!r}: noun embeddings of shape {tuple(nouns.shape)} '
                             f'do not match the student\'s {self.backbone.embed_dim}-d space')
        self.register_buffer('nouns', F.normalize(nouns, dim=-1), persistent=False)
        self.logit_scale = logit_scale

    def loss(self, inputs: Tensor, data_samples: List[DataSample]) -> Dict[str, Tensor]:
        boxes = [sample.region_boxes for sample in data_samples]
        labels = torch.cat([sample.region_labels for sample in data_samples])
        if labels.numel() and int(labels.max()) >= self.nouns.shape[0]:
            raise ValueError(f'pseudo label {int(labels.max())} is out of range for '
                             f'{self.nouns.shape[0]} noun embeddings')
        dense = self.backbone.dense_features(inputs)
        feats = self.backbone.roi_features(dense, boxes)
        return self.head(feats, labels, self.nouns, self.logit_scale)
