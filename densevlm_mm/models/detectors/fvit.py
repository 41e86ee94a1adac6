"""F-ViT (spec §8): a two-stage open-vocabulary detector on a frozen CLIP image tower.

One pass of :class:`DenseVLMBackbone` (``with_dense=True``) gives four trunk levels and the
joint-space dense map; the levels go through the simple feature pyramid (mmseg's
``Feature2Pyramid``: ×4 deconv-norm-GELU-deconv, ×2 deconv, identity, ½ max-pool) and mmdet's ``FPN``
(configured as the model's ``neck`` list), the RPN and the RoI head; the dense map feeds the RoI head's
VLM region scores at test time.
"""
import contextlib
from typing import List, Optional, Tuple

import torch
from mmdet.models.detectors import TwoStageDetector
from mmdet.structures import SampleList
from torch import Tensor

from densevlm_mm.registry import MODELS

from .fvit_bbox_head import TextEmbeddingClassifier, check_embedding_model


@MODELS.register_module()
class FViT(TwoStageDetector):
    """``TwoStageDetector`` whose backbone also returns the VLM dense map (last output).

    The backbone must be built with ``with_dense=True`` and, for the reference recipe,
    ``unlocked_groups=0`` (frozen, kept in eval mode): its forward then runs under ``no_grad``.
    The box head's text-embedding file must have been made with the backbone's CLIP model
    (``ValueError`` at construction otherwise).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not getattr(self.backbone, 'with_dense', False):
            raise ValueError('FViT needs backbone=dict(type=\'DenseVLMBackbone\', ..., '
                             'with_dense=True): the RoI head scores regions on its dense map.')
        classifier = getattr(getattr(self.roi_head, 'bbox_head', None), 'fc_cls', None)
        if isinstance(classifier, TextEmbeddingClassifier):
            check_embedding_model(classifier, getattr(self.backbone, 'model_name', None))

    @property
    def class_names(self) -> List[str]:
        """Classes of the box head's text embeddings (label order)."""
        return self.roi_head.bbox_head.class_names

    def set_vocabulary(self, names: List[str], embeddings: Tensor) -> None:
        """Detect ``names`` (text rows ``[C, D]``) from now on; see
        :meth:`FViTBBoxHead.set_vocabulary`."""
        self.roi_head.bbox_head.set_vocabulary(names, embeddings)
        if getattr(self, 'dataset_meta', None) is not None:
            self.dataset_meta = dict(self.dataset_meta, classes=tuple(names))

    @property
    def eval_class_names(self) -> List[str]:
        """Checked against the evaluation dataset by ``EvalClassCheckHook``."""
        return self.class_names

    @property
    def backbone_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.backbone.parameters())

    @staticmethod
    def _heads_autocast(batch_inputs: Tensor):
        """On CPU under bfloat16 autocast (``--amp`` without CUDA), the neck and heads run in fp32:
        mmcv's CPU NMS and RoIAlign have no bfloat16 kernels. Elsewhere: unchanged."""
        if batch_inputs.device.type == 'cpu' and torch.is_autocast_enabled('cpu'):
            return torch.autocast('cpu', enabled=False)
        return contextlib.nullcontext()

    def extract_feat_and_dense(self, batch_inputs: Tensor) -> Tuple[Tuple[Tensor, ...], Tensor]:
        """Images ``[B,3,H,W]`` → (pyramid levels for RPN / RoI head, dense map ``[B, D, h, w]``)."""
        if self.backbone_frozen:
            with torch.no_grad():
                outs = self.backbone(batch_inputs)
        else:
            outs = self.backbone(batch_inputs)
        *levels, dense = outs
        with self._heads_autocast(batch_inputs) as fp32:
            if fp32 is not None:
                levels = [t.float() for t in levels]
            x = self.neck(tuple(levels)) if self.with_neck else tuple(levels)
        return tuple(x), dense

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        """Pyramid levels only (mmdet's API: RPN, ``_forward``)."""
        return self.extract_feat_and_dense(batch_inputs)[0]

    def _rpn(self, x: Tuple[Tensor, ...], batch_data_samples: SampleList, losses: Optional[dict]):
        if not self.with_rpn:
            return [s.proposals for s in batch_data_samples]
        if losses is None:
            return self.rpn_head.predict(x, batch_data_samples, rescale=False)
        import copy
        proposal_cfg = self.train_cfg.get('rpn_proposal', self.test_cfg.rpn)
        rpn_samples = copy.deepcopy(batch_data_samples)
        for s in rpn_samples:
            s.gt_instances.labels = torch.zeros_like(s.gt_instances.labels)
        rpn_losses, results = self.rpn_head.loss_and_predict(x, rpn_samples,
                                                             proposal_cfg=proposal_cfg)
        for key in list(rpn_losses):
            if 'loss' in key and 'rpn' not in key:
                rpn_losses[f'rpn_{key}'] = rpn_losses.pop(key)
        losses.update(rpn_losses)
        return results

    def loss(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> dict:
        """RPN + RoI-head losses (the dense map is not used in training, as the reference)."""
        x, _ = self.extract_feat_and_dense(batch_inputs)
        losses: dict = {}
        with self._heads_autocast(batch_inputs):
            rpn_results = self._rpn(x, batch_data_samples, losses)
            losses.update(self.roi_head.loss(x, rpn_results, batch_data_samples))
        return losses

    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Detections with the detector × VLM ensemble scores."""
        x, dense = self.extract_feat_and_dense(batch_inputs)
        with self._heads_autocast(batch_inputs):
            rpn_results = self._rpn(x, batch_data_samples, None)
            results = self.roi_head.predict(x, rpn_results, batch_data_samples, rescale=rescale,
                                            vlm_feat=dense.float())
        return self.add_pred_to_datasample(batch_data_samples, results)
