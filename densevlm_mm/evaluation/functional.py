"""Mean per-class accuracy for region classification (spec §6.3).

All results are percentages (×100), as in the paper's tables.
"""
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype != torch.float64:
            x = x.float()  # bf16 / fp16 → fp32 (numpy has no bf16)
        return x.numpy()
    return np.asarray(x)


def topk_indices(scores: ArrayLike, k: int) -> np.ndarray:
    """Top-``k`` class indices ``[K, k]`` of scores ``[K, C]``, best first.

    Ties go to the lower class index (a stable sort), deterministically on every platform.
    """
    scores = _to_numpy(scores)
    if scores.ndim != 2:
        raise ValueError(f'scores must be [K, C], got shape {scores.shape}')
    k = min(int(k), scores.shape[1])
    return np.argsort(-scores, axis=1, kind='stable')[:, :k]


def _as_topk(scores_or_topk: ArrayLike, kmax: int,
             num_classes: Optional[int]) -> Tuple[np.ndarray, Optional[int]]:
    arr = _to_numpy(scores_or_topk)
    if arr.ndim != 2:
        raise ValueError(f'expected scores [K, C] or top-k indices [K, k], got shape {arr.shape}')
    if np.issubdtype(arr.dtype, np.floating):
        if num_classes is not None and arr.shape[1] != num_classes:
            raise ValueError(f'scores have {arr.shape[1]} classes but num_classes={num_classes}')
        return topk_indices(arr, kmax), arr.shape[1]
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f'expected float scores or integer top-k indices, got dtype {arr.dtype}')
    return arr.astype(np.int64), num_classes


def correct_at_k(topk: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """bool ``[K]``: the label is among the first ``k`` columns of ``topk``."""
    return (topk[:, :k] == labels[:, None]).any(axis=1)


def per_class_accuracy(correct: np.ndarray, labels: np.ndarray,
                       num_classes: Optional[int] = None,
                       reference_rounding: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Accuracy ``[C]`` (fraction, NaN for classes without samples) and sample counts ``[C]``.

    ``reference_rounding`` rounds each accuracy through float16 like the reference (``.half()``).
    """
    labels = np.asarray(labels, dtype=np.int64)
    size = max(int(num_classes or 0), int(labels.max(initial=-1)) + 1)
    counts = np.bincount(labels, minlength=size)
    hits = np.bincount(labels, weights=np.asarray(correct, dtype=np.float64), minlength=size)
    with np.errstate(invalid='ignore', divide='ignore'):
        acc = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    if reference_rounding:
        acc = acc.astype(np.float16).astype(np.float64)
    return acc, counts


def mean_class_accuracy(scores_or_topk: ArrayLike,
                        labels: ArrayLike,
                        topk: Union[int, Sequence[int]] = (1, 5),
                        num_classes: Optional[int] = None,
                        reference_rounding: bool = False) -> Dict[str, float]:
    """Mean per-class top-k accuracy, in percent.

    For each k, a region is correct when its label is among its k best classes; accuracy is computed
    per class and averaged, unweighted, over the classes that have at least one sample (the reference's
    ``macc``). With no samples at all the result is NaN.

    Args:
        scores_or_topk: float scores ``[K, C]`` (top-k taken with ties to the lower index), or integer
            top-k class indices ``[K, k']``, best first (e.g. a model's ``pred_box_topk``).
        labels: int ``[K]`` true class indices.
        topk: the k values. With indices, k may exceed k' only if ``num_classes`` is given and
            ``k' >= num_classes`` (all classes listed).
        num_classes: number of classes (checks labels / score width).
        reference_rounding: round every per-class accuracy through float16 before averaging, like the
            reference (spec §6.3).

    Returns:
        ``{'top1': 73.4, 'top5': 90.5}`` — one ``top{k}`` key per k, in percent.
    """
    ks = (int(topk), ) if isinstance(topk, (int, np.integer)) else tuple(int(k) for k in topk)
    if not ks or min(ks) < 1:
        raise ValueError(f'topk must be positive integers, got {topk!r}')
    labels = _to_numpy(labels).astype(np.int64).reshape(-1)
    top, num_classes = _as_topk(scores_or_topk, max(ks), num_classes)
    if top.shape[0] != labels.shape[0]:
        raise ValueError(f'{top.shape[0]} predictions but {labels.shape[0]} labels')
    if labels.size and labels.min() < 0:
        raise ValueError('labels must be non-negative class indices')
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise ValueError(f'label {labels.max()} out of range for {num_classes} classes')
    out = {}
    for k in ks:
        if k > top.shape[1] and not (num_classes is not None and top.shape[1] >= num_classes):
            raise ValueError(f'top-{k} accuracy asked for but only {top.shape[1]} predicted '
                             'classes per region are given')
        if labels.size == 0:
            out[f'top{k}'] = math.nan
            continue
        acc, counts = per_class_accuracy(correct_at_k(top, labels, k), labels, num_classes,
                                         reference_rounding)
        out[f'top{k}'] = float(np.mean(acc[counts > 0]) * 100)
    return out
