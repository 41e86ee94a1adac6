"""F-ViT RoI head: mmdet's ``StandardRoIHead`` plus the VLM region features of the dense map."""
from typing import List, Optional, Tuple

import torch.nn.functional as F
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.utils import empty_instances
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import InstanceList
from mmengine.config import ConfigDict
from torch import Tensor

from densevlm_mm.registry import MODELS


@MODELS.register_module()
class FViTRoIHead(StandardRoIHead):
    """``StandardRoIHead`` whose test-time class scores are the ensemble of the box head and the
    frozen VLM (spec §8.2).

    Args:
        vlm_roi_extractor: an mmdet RoI extractor on the single dense map (reference:
            ``SingleRoIExtractor`` with ``RoIAlign(output_size=1, sampling_ratio=0,
            use_torchvision=True)`` and ``featmap_strides=[patch]``); ``None`` disables the ensemble.
        **kwargs: ``StandardRoIHead`` arguments; ``bbox_head`` must be :class:`FViTBBoxHead`.
    """

    def __init__(self, vlm_roi_extractor: Optional[dict] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vlm_roi_extractor = MODELS.build(vlm_roi_extractor) if vlm_roi_extractor else None

    def vlm_region_features(self, dense: Tensor, rois: Tensor) -> Tensor:
        """RoI features ``[N, D]`` of the per-location L2-normalised dense map ``[B, D, h, w]``
        (the reference pools the normalised map)."""
        feats = self.vlm_roi_extractor([F.normalize(dense.float(), dim=1)], rois.float())
        return feats.flatten(1)

    def predict(self, x: Tuple[Tensor], rpn_results_list: InstanceList,
                batch_data_samples: SampleList, rescale: bool = False,
                vlm_feat: Optional[Tensor] = None) -> InstanceList:
        """``StandardRoIHead.predict`` with the VLM dense map ``[B, D, h, w]`` for the ensemble."""
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        bbox_rescale = rescale if not self.with_mask else False
        results_list = self.predict_bbox(x, batch_img_metas, rpn_results_list,
                                         rcnn_test_cfg=self.test_cfg, rescale=bbox_rescale,
                                         vlm_feat=vlm_feat)
        if self.with_mask:
            results_list = self.predict_mask(x, batch_img_metas, results_list, rescale=rescale)
        return results_list

    def predict_bbox(self, x: Tuple[Tensor], batch_img_metas: List[dict],
                     rpn_results_list: InstanceList, rcnn_test_cfg: ConfigDict,
                     rescale: bool = False, vlm_feat: Optional[Tensor] = None) -> InstanceList:
        """Boxes and ensembled class probabilities (passed to the box head as probabilities)."""
        proposals = [res.bboxes for res in rpn_results_list]
        rois = bbox2roi(proposals)
        if rois.shape[0] == 0:
            return empty_instances(batch_img_metas, rois.device, task_type='bbox',
                                   box_type=self.bbox_head.predict_box_type,
                                   num_classes=self.bbox_head.num_classes,
                                   score_per_cls=rcnn_test_cfg is None)
        bbox_results = self._bbox_forward(x, rois)
        vlm_feats = None
        if vlm_feat is not None and self.vlm_roi_extractor is not None:
            vlm_feats = self.vlm_region_features(vlm_feat, rois)
        probs = self.bbox_head.region_probs(bbox_results['cls_score'], vlm_feats)
        num = tuple(len(p) for p in proposals)
        bbox_preds = bbox_results['bbox_pred']
        bbox_preds = bbox_preds.split(num, 0) if bbox_preds is not None else (None, ) * len(num)
        return self.bbox_head.predict_by_feat(
            rois=rois.split(num, 0), cls_scores=probs.split(num, 0), bbox_preds=bbox_preds,
            batch_img_metas=batch_img_metas, rcnn_test_cfg=rcnn_test_cfg, rescale=rescale)
