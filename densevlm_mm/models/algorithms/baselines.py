"""The baselines of paper Tables 1 and 11 as thin algorithms (spec §4).

* feature KD (CLIPSelf): :class:`CLIPSelf` with a :class:`CLIPSelfHead` — student RoI features vs.
  the frozen initial model's global embedding of each region crop (cosine);
* logits KD: :class:`DenseVLM` with ``head.loss=dict(type='LogitsKDLoss')`` — the P-VLM's
  all-class distribution, no threshold, no thing/stuff decoupling;
* RegionCLIP-style: :class:`RegionCLIP` with a :class:`RegionCLIPHead` — BCE of pseudo-labelled
  proposals against noun embeddings.
"""
from typing import Dict, List

import torch
from mmpretrain.structures import DataSample
from torch import Tensor

from densevlm_mm.registry import MODELS

from .densevlm import DenseVLM


@MODELS.register_module()
class CLIPSelf(DenseVLM):
    """CLIPSelf feature distillation: RoI features of the student's dense map are pulled
    towards the teacher's global embedding of the same region's crop.

    Args:
        backbone: the student :class:`DenseVLMBackbone`.
        target_generator: a :class:`CropTeacher` (the student's initial weights).
        head: ``dict(type='CLIPSelfHead', loss=dict(type='CLIPSelfLoss'))``.
        Other arguments as :class:`DenseVLM` (evaluation embeddings, data preprocessor).
    Data samples need ``grid_boxes`` and ``region_crops`` (pipeline ``ResizeLongestPad(
    keep_ori=True)`` → ``SampleGridRegions`` → ``CropGridRegions``).
    """

    def loss(self, inputs: Tensor, data_samples: List[DataSample]) -> Dict[str, Tensor]:
        boxes = [sample.grid_boxes for sample in data_samples]
        dense = self.backbone.dense_features(inputs)  # [B, D, h, w]
        student = self.backbone.roi_features(dense, boxes)  # [K, D]
        crops = torch.cat([sample.region_crops for sample in data_samples])  # [K, 3, S, S]
        teacher = self.target_generator(crops)  # [K, D], frozen
        return self.head.loss(student, teacher)


@MODELS.register_module()
class RegionCLIP(DenseVLM):
    """RegionCLIP-style region-noun alignment on pseudo-labelled proposals (spec §4.2).

    Args:
        backbone: the student.
        head: ``dict(type='RegionCLIPHead', noun_embeddings=..., loss=dict(
            type='RegionCLIPLoss', num_sampled_classes=100), logit_scale=100.0)``.
        Other arguments as :class:`DenseVLM`.
    Data samples need ``region_boxes`` and ``region_labels`` (:class:`CocoPseudoRegionDataset`).
    """

    def loss(self, inputs: Tensor, data_samples: List[DataSample]) -> Dict[str, Tensor]:
        boxes = [sample.region_boxes for sample in data_samples]
        labels = torch.cat([sample.region_labels for sample in data_samples])
        dense = self.backbone.dense_features(inputs)
        feats = self.backbone.roi_features(dense, boxes)
        return self.head.loss(feats, labels)
