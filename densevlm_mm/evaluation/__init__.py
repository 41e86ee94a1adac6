"""Region-classification evaluation (paper Table 5)."""
from .functional import (correct_at_k, mean_class_accuracy, per_class_accuracy,
                         topk_indices)
from .region_cls_metric import RegionClassificationMetric, format_region_table

__all__ = [
    'mean_class_accuracy', 'per_class_accuracy', 'topk_indices', 'correct_at_k',
    'RegionClassificationMetric', 'format_region_table'
]
