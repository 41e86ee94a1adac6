"""mean_class_accuracy against hand computations (spec §6.3)."""
import math

import numpy as np
import pytest
import torch

from densevlm_mm.evaluation import mean_class_accuracy, per_class_accuracy, topk_indices

# labels: class 0 ×3, class 1 ×2, class 3 ×1; class 2 and 4 have no samples
LABELS = np.array([0, 0, 0, 1, 1, 3])
TOPK = np.array([
    [0, 1, 2, 3, 4],  # class 0: top-1 hit
    [1, 0, 2, 3, 4],  # class 0: top-5 hit only
    [2, 3, 4, 1, 0],  # class 0: top-5 hit only
    [1, 0, 2, 3, 4],  # class 1: top-1 hit
    [0, 2, 3, 4, 5],  # class 1: miss
    [5, 6, 7, 3, 0],  # class 3: top-5 hit only
])


def test_hand_computation_with_absent_classes():
    out = mean_class_accuracy(TOPK, LABELS, topk=(1, 5), num_classes=8)
    # per class top-1: 1/3, 1/2, 0 (classes 2, 4.. have no samples and are skipped)
    assert out['top1'] == pytest.approx((1 / 3 + 1 / 2 + 0) / 3 * 100)
    # per class top-5: 3/3, 1/2, 1
    assert out['top5'] == pytest.approx((1 + 1 / 2 + 1) / 3 * 100)
    assert set(out) == {'top1', 'top5'}
    assert mean_class_accuracy(TOPK, LABELS, topk=3)['top3'] == pytest.approx(
        (2 / 3 + 1 / 2 + 0) / 3 * 100)


def test_fp16_rounding_like_the_reference():
    out = mean_class_accuracy(TOPK, LABELS, reference_rounding=True)
    third = float(np.float16(1 / 3))
    assert third == 0.333251953125
    assert out['top1'] == pytest.approx((third + 0.5 + 0) / 3 * 100, abs=1e-12)
    assert out['top1'] != pytest.approx((1 / 3 + 0.5) / 3 * 100, abs=1e-6)
    acc, counts = per_class_accuracy(TOPK[:, 0] == LABELS, LABELS, 5, reference_rounding=True)
    assert counts.tolist() == [3, 2, 0, 1, 0]
    assert acc[0] == third and math.isnan(acc[2])


def test_scores_input_ties_go_to_the_lower_index():
    scores = torch.tensor([[0.5, 0.5, 0.1],   # label 1: tie with class 0 → top-1 is 0 (miss)
                           [0.1, 0.2, 0.9],   # label 2: hit
                           [0.3, 0.2, 0.1]])  # label 1: second
    labels = torch.tensor([1, 2, 1])
    assert topk_indices(scores, 2).tolist() == [[0, 1], [2, 1], [0, 1]]
    out = mean_class_accuracy(scores, labels, topk=(1, 2, 5))
    assert out == pytest.approx({'top1': 50.0, 'top2': 100.0, 'top5': 100.0})  # 3 classes < 5
    out16 = mean_class_accuracy(scores.to(torch.bfloat16), labels, topk=1)
    assert out16 == {'top1': 50.0}


def test_errors_and_empty():
    with pytest.raises(ValueError, match='only 1 predicted'):
        mean_class_accuracy(TOPK[:, :1], LABELS, topk=(1, 5))
    # with every class listed, k beyond the width is fine
    assert mean_class_accuracy(np.array([[1, 0]]), [0], topk=5, num_classes=2) == {'top5': 100.0}
    with pytest.raises(ValueError, match='out of range'):
        mean_class_accuracy(TOPK, LABELS, num_classes=3)
    with pytest.raises(ValueError, match='6 predictions but 2 labels'):
        mean_class_accuracy(TOPK, LABELS[:2])
    with pytest.raises(ValueError, match='classes but num_classes'):
        mean_class_accuracy(np.zeros((2, 4)), [0, 1], num_classes=5)
    out = mean_class_accuracy(np.zeros((0, 5), np.int64), np.zeros(0, np.int64))
    assert math.isnan(out['top1']) and math.isnan(out['top5'])
