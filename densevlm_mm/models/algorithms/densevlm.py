"""DenseVLM: retrieval-based, thing/stuff-decoupled region-language alignment (paper Fig. 3)."""
from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmpretrain.models.selfsup.base import BaseSelfSupervisor
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from densevlm_mm.registry import MODELS
from densevlm_mm.text_embeddings import load_text_embeddings

from ..heads import DenseVLMHead


@MODELS.register_module()
class DenseVLM(BaseSelfSupervisor):
    """The training algorithm: student dense map → grid regions → P-VLM retrieval → decoupled loss.

    Args:
        backbone: the student :class:`DenseVLMBackbone` (the only trained, DDP-synchronised part).
        target_generator: the frozen P-VLM :class:`RegionRetriever` (``None`` for evaluation only).
        head: :class:`DenseVLMHead` with the student's class embeddings and the loss.
        data_preprocessor: defaults to :class:`DenseVLMDataPreprocessor`.
        eval_text_embeddings: class embeddings of the evaluation dataset (made with the student's
            text tower) used by :meth:`predict`; the evaluation hook checks their names against
            the dataset's classes.
        eval_topk: number of ranked classes stored per region by :meth:`predict`.
        freeze_unused: freeze student parameters that the dense path never uses (the query/key
            projections of the last transformer block or of ModifiedResNet's attention pool). They
            get no gradient in the reference either (so AdamW never updates them); freezing them
            keeps DDP's gradient buckets complete without ``find_unused_parameters``.
    """

    def __init__(self, backbone: Union[dict, nn.Module],
                 target_generator: Optional[Union[dict, nn.Module]] = None,
                 head: Optional[Union[dict, nn.Module]] = None,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 eval_text_embeddings: Optional[str] = None, eval_topk: int = 5,
                 freeze_unused: bool = True, init_cfg: Optional[dict] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='DenseVLMDataPreprocessor')
        super().__init__(backbone=backbone, head=head, target_generator=target_generator,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        text_head = self.with_head and isinstance(self.head, DenseVLMHead)
        if text_head and self.head.embed_dim != self.backbone.embed_dim:
            raise ValueError(
                f'the student text embeddings ({self.head.text_embeddings_file}) are '
                f'{self.head.embed_dim}-d but the student backbone embeds into '
                f'{self.backbone.embed_dim}-d; generate them with the student model.')
        if text_head and self.with_target_generator and \
                self.head.class_names != getattr(self.target_generator, 'class_names', None):
            raise ValueError('the student and P-VLM text embedding files list different classes '
                             '(names or order); generate both from one vocabulary.')
        self.eval_topk = eval_topk
        self.eval_class_names: Optional[List[str]] = None
        if eval_text_embeddings is not None:
            te = load_text_embeddings(eval_text_embeddings, embed_dim=self.backbone.embed_dim)
            self.eval_class_names = list(te.class_names)
            self.register_buffer('eval_text', F.normalize(te.embeddings.float(), dim=-1),
                                 persistent=False)
        self.frozen_unused: List[str] = []
        if freeze_unused and self.with_head:  # only matters for training
            self.frozen_unused = self._freeze_unused_student_parameters()
        if self.with_target_generator:
            # The frozen P-VLM is not part of DDP: no broadcast, no gradient buckets.
            self._ddp_params_and_buffers_to_ignore = [
                f'target_generator.{name}' for name, _ in
                list(self.target_generator.named_parameters())
                + list(self.target_generator.named_buffers())]

    def _freeze_unused_student_parameters(self) -> List[str]:
        """Probe the dense path once and freeze trainable parameters it leaves without grad."""
        trainable = {n: p for n, p in self.backbone.named_parameters() if p.requires_grad}
        if not trainable:
            return []
        was_training = self.backbone.training
        self.backbone.eval()  # no BatchNorm statistics update
        size = 4 * self.backbone.stride
        param = next(iter(trainable.values()))
        probe = torch.zeros(1, 3, size, size, device=param.device, dtype=param.dtype)
        saved = {n: p.grad for n, p in trainable.items()}
        for p in trainable.values():
            p.grad = None
        with torch.enable_grad():
            self.backbone.dense_features(probe).float().sum().backward()
        unused = [n for n, p in trainable.items() if p.grad is None]
        for n, p in trainable.items():
            p.grad = saved[n]
            if n in unused:
                p.requires_grad_(False)
        self.backbone.train(was_training)
        if unused:
            print_log(f'DenseVLM: froze {len(unused)} student parameters the dense path never '
                      f'uses: {unused}', logger='current')
        return unused

    def forward(self, inputs: Tensor, data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor'):
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        return super().forward(inputs, data_samples, mode)

    def loss(self, inputs: Tensor, data_samples: List[DataSample]) -> Dict[str, Tensor]:
        """Paper Fig. 3 for a batch ``inputs [B, 3, H, W]`` with ``grid_boxes`` per sample."""
        if not (self.with_head and self.with_target_generator):
            raise RuntimeError('DenseVLM.loss needs a head and a target_generator (P-VLM)')
        boxes = [sample.grid_boxes for sample in data_samples]
        dense = self.backbone.dense_features(inputs)  # student dense map [B, Ds, h, w]
        student = self.backbone.roi_features(dense, boxes)  # region features [K, Ds]
        targets = self.target_generator(inputs, boxes)  # P-VLM retrieval (frozen)
        return self.head.loss(student, targets)  # decoupled alignment

    @torch.no_grad()
    def predict(self, inputs: Tensor, data_samples: List[DataSample]) -> List[DataSample]:
        """Region classification: one dense forward serves boxes and masks.

        Adds ``pred_box_topk`` and (when masks are given) ``pred_mask_topk`` ``[K_i, topk]`` class
        indices (best first) to each sample, from ``region_boxes`` / ``region_masks``.
        """
        if not hasattr(self, 'eval_text'):
            raise RuntimeError('DenseVLM.predict needs `eval_text_embeddings` in the model config')
        dense = self.backbone.dense_features(inputs)
        counts = [len(s.region_boxes) for s in data_samples]
        topk = min(self.eval_topk, self.eval_text.shape[0])
        box_feats = self.backbone.roi_features(dense, [s.region_boxes for s in data_samples])
        box_topk = self._rank(box_feats, topk).split(counts)
        has_masks = all('region_masks' in s for s in data_samples)
        if has_masks:
            mask_feats = self.backbone.mask_features(
                dense, [s.region_masks for s in data_samples])
            mask_topk = self._rank(mask_feats, topk).split(counts)
        for i, sample in enumerate(data_samples):
            sample.set_field(box_topk[i], 'pred_box_topk')
            if has_masks:
                sample.set_field(mask_topk[i], 'pred_mask_topk')
        return data_samples

    def _rank(self, feats: Tensor, topk: int) -> Tensor:
        scores = F.normalize(feats.float(), dim=-1) @ self.eval_text.t()
        return scores.topk(topk, dim=-1).indices
