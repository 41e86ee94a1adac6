"""DenseVLM: retrieval-based, thing/stuff-decoupled region-language alignment (paper Fig. 3)."""
from collections import Counter
from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from mmengine.dist import master_only
from mmengine.logging import print_log
from mmpretrain.models.selfsup.base import BaseSelfSupervisor
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from densevlm_mm.registry import MODELS
from densevlm_mm.text_embeddings import load_text_embeddings
from densevlm_mm.utils.checks import check_number

from ..heads import DenseVLMHead


@MODELS.register_module()
class DenseVLM(BaseSelfSupervisor):
    """The training algorithm: student dense map → grid regions → P-VLM retrieval → decoupled loss.

    Args:
        backbone: the student :class:`DenseVLMBackbone` (the only trained, DDP-synchronised part).
        target_generator: the frozen P-VLM :class:`RegionRetriever` (``None`` for evaluation only),
            or :class:`CachedRegionRetriever` to read its outputs from the region cache.
        head: :class:`DenseVLMHead` with the student's class embeddings and the loss.
        data_preprocessor: defaults to :class:`DenseVLMDataPreprocessor`.
        eval_text_embeddings: class embeddings of the evaluation dataset (made with the student's
            text tower) used by :meth:`predict`; the evaluation hook checks their names against
            the dataset's classes.
        eval_topk: number of ranked classes stored per region by :meth:`predict` (>= 1).

    Parameters the dense path never reaches (q/k of the value-only last block) are frozen by the
    backbone itself (``DenseVLMBackbone(freeze_unused=True)``, names in
    ``backbone.frozen_unused``), so the algorithm's constructor only builds its parts.
    """

    def __init__(self, backbone: Union[dict, nn.Module],
                 target_generator: Optional[Union[dict, nn.Module]] = None,
                 head: Optional[Union[dict, nn.Module]] = None,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 eval_text_embeddings: Optional[str] = None, eval_topk: int = 5,
                 init_cfg: Optional[dict] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='DenseVLMDataPreprocessor')
        eval_topk = check_number(eval_topk, 'eval_topk', type(self).__name__, low=1,
                                 integer=True, example=5)
        super().__init__(backbone=backbone, head=head, target_generator=target_generator,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.eval_topk = eval_topk
        head_dim = getattr(self.head, 'embed_dim', None) if self.with_head else None
        if head_dim is not None and head_dim != self.backbone.embed_dim:
            source = getattr(self.head, 'text_embeddings_file', None) or getattr(
                self.head, 'noun_embeddings_file', 'the class embeddings')
            raise ValueError(
                f'the student text embeddings ({source}) are {head_dim}-d but the student '
                f'backbone embeds into {self.backbone.embed_dim}-d; generate them with the '
                'student model.')
        text_model = getattr(self.head, 'text_model_name', None) if self.with_head else None
        student_model = getattr(self.backbone, 'model_name', None)
        if text_model not in (None, 'unknown', 'unknown (.npy)') and student_model is not None \
                and text_model != student_model:
            raise ValueError(
                f'{self.head.text_embeddings_file!r} was made with the text tower of '
                f'{text_model!r}, but the student is {student_model!r}: embeddings of another text '
                f'tower are not comparable even with the same dimension. Generate the file with '
                f'`python tools/text_embeddings.py {student_model} CHECKPOINT VOCABULARY OUT.pt`.')
        if self.with_head and isinstance(self.head, DenseVLMHead) and \
                self.with_target_generator and \
                self.head.class_names != getattr(self.target_generator, 'class_names', None):
            raise ValueError('the student and P-VLM text embedding files list different classes '
                             '(names or order); generate both from one vocabulary.')
        self.eval_class_names: Optional[List[str]] = None
        if eval_text_embeddings is not None:
            te = load_text_embeddings(eval_text_embeddings, embed_dim=self.backbone.embed_dim,
                                      expected_model=getattr(self.backbone, 'model_name', None))
            self.eval_class_names = list(te.class_names)
            self.register_buffer('eval_text', F.normalize(te.embeddings.float(), dim=-1),
                                 persistent=False)
        if self.with_target_generator:
            # The frozen P-VLM is not part of DDP: no broadcast, no gradient buckets.
            self._ddp_params_and_buffers_to_ignore = [
                f'target_generator.{name}' for name, _ in
                list(self.target_generator.named_parameters())
                + list(self.target_generator.named_buffers())]

    @master_only
    def _dump_init_info(self) -> None:
        """One summary line instead of mmengine's per-tensor "The value is the same before and
        after calling `init_weights`" records (the weights come from checkpoints, at
        construction)."""
        kinds = Counter()
        for _, param in self.named_parameters():
            info = self._params_init_info[param]['init_info']
            kinds['unchanged (loaded at construction)' if info.startswith('The value is the same')
                  else info.strip()] += 1
        print_log('init_weights: ' + '; '.join(f'{v} parameter tensors {k}'
                                               for k, v in kinds.items()), logger='current')

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
        if getattr(self.target_generator, 'reads_cache', False):
            targets = self.target_generator(data_samples)  # P-VLM logits from the region cache
        else:
            targets = self.target_generator(inputs, boxes)  # the step's one P-VLM retrieval
        return self.head.loss(student, targets)  # decoupled alignment

    def predict(self, inputs: Tensor, data_samples: List[DataSample]) -> List[DataSample]:
        """Region classification: one dense forward serves boxes and masks.

        Adds ``pred_box_topk`` and (when masks are given) ``pred_mask_topk`` ``[K_i, topk]`` class
        indices (best first) to each sample, from ``region_boxes`` / ``region_masks``.
        """
        if not hasattr(self, 'eval_text'):
            raise RuntimeError('DenseVLM.predict needs `eval_text_embeddings` in the model config')
        with torch.no_grad():  # a block, not a decorator: mutmut mutates it
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
