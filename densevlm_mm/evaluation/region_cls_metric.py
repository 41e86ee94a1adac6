"""Region classification metric of the paper's Table 5 (Boxes / Masks-T / Masks-S, spec §6.3)."""
import json
import math
import numbers
import os
import os.path as osp
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from densevlm_mm.registry import METRICS

from .functional import correct_at_k, mean_class_accuracy, per_class_accuracy

# key prefix, prediction field, thing (True) or stuff (False) regions, table header
SPLITS = (
    ('boxes', 'box', True, 'Boxes'),
    ('masks_thing', 'mask', True, 'Masks-T'),
    ('masks_stuff', 'mask', False, 'Masks-S'),
    ('boxes_stuff', 'box', False, 'Boxes-S'),
)
TABLE_SPLITS = ('boxes', 'masks_thing', 'masks_stuff')  # the paper's columns


def _get(sample: Any, key: str, default=None):
    if isinstance(sample, Mapping):
        return sample.get(key, default)
    return sample.get(key, default) if hasattr(sample, 'get') else getattr(sample, key, default)


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _fmt(v: float) -> str:
    return '-' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.1f}'


def format_region_table(rows: Mapping[str, Mapping[str, float]], topk: Sequence[int] = (1, 5),
                        splits: Sequence[str] = TABLE_SPLITS) -> str:
    """Text table in the layout of the paper's Table 5.

    Args:
        rows: ``{model name: metrics}`` with keys such as ``'boxes.top1'`` (a metric prefix like
            ``'coco/'`` is ignored).
        topk: the k columns under each region type.
        splits: which region types, in column order.
    """
    headers = {name: head for name, _, _, head in SPLITS}
    cells = {}
    for model, metrics in rows.items():
        plain = {k.rsplit('/', 1)[-1]: v for k, v in metrics.items()}
        cells[model] = [_fmt(plain.get(f'{s}.top{k}')) for s in splits for k in topk]
    sub = [f'Top{k}' for _ in splits for k in topk]
    cw = max([5] + [len(c) for r in cells.values() for c in r] + [len(s) for s in sub])
    mw = max([5] + [len(m) for m in rows])
    group_w = len(topk) * (cw + 3) - 3
    groups = [headers[s].center(group_w) for s in splits]
    line = '+' + '-' * (mw + 2) + ''.join('+' + '-' * (cw + 2) for _ in sub) + '+'
    out = [line,
           '| ' + ' ' * mw + ' | ' + ' | '.join(groups) + ' |',
           '| ' + 'Model'.ljust(mw) + ' | ' + ' | '.join(s.center(cw) for s in sub) + ' |',
           line]
    for model, r in cells.items():
        out.append('| ' + model.ljust(mw) + ' | ' + ' | '.join(c.rjust(cw) for c in r) + ' |')
    out.append(line)
    return '\n'.join(out)


@METRICS.register_module()
class RegionClassificationMetric(BaseMetric):
    """Mean class accuracy of GT regions classified from box RoI features and from mask pooling.

    Reads from each data sample ``region_labels`` ``[K]``, ``region_is_thing`` ``[K]`` (else the
    dataset's ``is_thing``), ``pred_box_topk`` and/or ``pred_mask_topk`` ``[K, k]`` (class indices, best
    first), and ``sample_idx`` / ``img_path`` to drop duplicated images. Results (percent, ×100):

    =======================  ====================================================================
    ``boxes.top{k}``          thing regions, box features — the paper's **Boxes**
    ``masks_thing.top{k}``    thing regions, mask pooling — **Masks-T**
    ``masks_stuff.top{k}``    stuff regions, mask pooling — **Masks-S**
    ``boxes_stuff.top{k}``    stuff regions, box features (computed by the reference, not reported)
    =======================  ====================================================================

    Each is the unweighted mean over the classes that have regions in that split of the per-class
    accuracy (NaN when the split is empty). Keys of a missing prediction field are left out.

    Empty masks: a region whose mask has no pixel left after resizing (``region_mask_empty``, set by
    ``ResizeLongestPad``; it happens under the reference protocol, whose masks are thresholded on the
    coarse grid) has no mask feature, so its ranking would be an arbitrary tie-break. It is scored as
    misclassified instead and counted: ``masks_thing.empty`` / ``masks_stuff.empty`` (number of such
    regions; these keys are in the results only when some mask vanished, and always in the JSON's
    ``empty_masks``; a line under the printed table gives them).

    Protocol: the dataset's ``metainfo['region_protocol']`` (``'ours'`` or ``'reference'``, see
    ``PanopticRegionDataset``) is printed with the table and written to the JSON, so a number can be
    quoted with its protocol; the reference protocol also turns on ``reference_rounding`` unless it
    is given.

    Multi-process evaluation: ``process`` stores one compact entry per image, so mmengine's
    ``collect_results`` restores the dataset order and truncates the sampler's padding (``N % world
    size != 0``); entries with a repeated ``sample_idx`` (or, without it, ``img_path``) are dropped
    as well, so padded duplicates never count twice.

    Args:
        topk: the k values (predictions must hold at least ``max(topk)`` columns).
        reference_rounding: round per-class accuracies through fp16 like the reference; ``None``
            (default): only under the dataset's reference protocol.
        model_name: row label of the printed table.
        out_file: write a JSON with the metrics, region counts and per-class accuracies.
        save_predictions: write an ``.npz`` with per-region ``labels``, ``is_thing``,
            ``image_index``, ``box_topk`` / ``mask_topk`` and ``class_names`` / ``class_is_thing``
            (input of ``tools/analysis/confusion_matrix.py``).
        collect_device / collect_dir / prefix: see :class:`mmengine.evaluator.BaseMetric`. Without a
            prefix the keys are exactly as above.
    """
    default_prefix: Optional[str] = ''

    def __init__(self,
                 topk: Union[int, Sequence[int]] = (1, 5),
                 reference_rounding: Optional[bool] = None,
                 model_name: str = 'model',
                 out_file: Optional[str] = None,
                 save_predictions: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        self.topk = ((int(topk), ) if isinstance(topk, numbers.Integral)
                     else tuple(int(k) for k in topk))
        self.reference_rounding = reference_rounding
        self.model_name = model_name
        self.out_file = out_file
        self.save_predictions = save_predictions

    def _class_is_thing(self) -> Optional[np.ndarray]:
        meta = self.dataset_meta or {}
        return None if meta.get('is_thing') is None else np.asarray(meta['is_thing'], dtype=bool)

    def process(self, data_batch: Any, data_samples: Sequence) -> None:
        kmax = max(self.topk)
        for sample in data_samples:
            labels = _get(sample, 'region_labels')
            if labels is None:
                raise KeyError('RegionClassificationMetric needs "region_labels" in each data sample '
                               f'(got keys {sorted(sample.keys()) if hasattr(sample, "keys") else "?"})')
            labels = _np(labels).astype(np.int64).reshape(-1)
            is_thing = _get(sample, 'region_is_thing')
            if is_thing is None:
                flags = self._class_is_thing()
                if flags is None:
                    raise KeyError('no "region_is_thing" in the data sample and no dataset is_thing')
                is_thing = flags[labels]
            entry = dict(sample_idx=_get(sample, 'sample_idx'), img_path=_get(sample, 'img_path'),
                         labels=labels.astype(np.int32),
                         is_thing=_np(is_thing).astype(bool).reshape(-1))
            empty = _get(sample, 'region_mask_empty')
            entry['mask_empty'] = (np.zeros(len(labels), bool) if empty is None else
                                   _np(empty).astype(bool).reshape(-1))
            if len(entry['mask_empty']) != len(labels):
                raise ValueError(f'region_mask_empty has {len(entry["mask_empty"])} entries but '
                                 f'there are {len(labels)} regions ({_get(sample, "img_path")})')
            for field in ('box', 'mask'):
                pred = _get(sample, f'pred_{field}_topk')
                if pred is not None:
                    # fewer than max(topk) columns is checked in compute_metrics (fine when
                    # every class is listed)
                    pred = _np(pred)
                    if pred.ndim != 2:
                        pred = (pred.reshape(len(labels), -1) if len(labels) else
                                np.zeros((0, kmax), np.int64))
                    if pred.shape[0] != len(labels):
                        raise ValueError(f'pred_{field}_topk has {pred.shape[0]} rows but there are '
                                         f'{len(labels)} regions ({_get(sample, "img_path")})')
                    pred = pred[:, :kmax].astype(np.int32)
                entry[field] = pred
            self.results.append(entry)

    @staticmethod
    def _dedup(results: List[dict]) -> List[dict]:
        seen, kept = set(), []
        for r in results:
            key = (('idx', r['sample_idx']) if r.get('sample_idx') is not None else
                   ('path', r['img_path']) if r.get('img_path') is not None else None)
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            kept.append(r)
        if len(kept) != len(results):
            print_log(f'RegionClassificationMetric: dropped {len(results) - len(kept)} duplicated '
                      'images', logger='current')
        return kept

    def _gather(self, results: List[dict]) -> Dict[str, Optional[np.ndarray]]:
        out: Dict[str, Optional[np.ndarray]] = dict(
            labels=np.concatenate([r['labels'] for r in results]).astype(np.int64),
            is_thing=np.concatenate([r['is_thing'] for r in results]).astype(bool),
            image_index=np.concatenate(
                [np.full(len(r['labels']), i, dtype=np.int64) for i, r in enumerate(results)]),
            mask_empty=np.concatenate(
                [r.get('mask_empty', np.zeros(len(r['labels']), bool)) for r in results]).astype(bool))
        for field in ('box', 'mask'):
            have = [r[field] is not None for r in results]
            if not any(have):
                out[field] = None
                continue
            missing = [i for i, (h, r) in enumerate(zip(have, results)) if not h and len(r['labels'])]
            if missing:
                raise ValueError(f'pred_{field}_topk is missing for {len(missing)} of '
                                 f'{len(results)} images (e.g. {results[missing[0]]["img_path"]})')
            widths = {r[field].shape[1] for r in results if r[field] is not None and len(r[field])}
            if len(widths) > 1:
                raise ValueError(f'pred_{field}_topk has different widths across images: {widths}')
            width = widths.pop() if widths else max(self.topk)
            out[field] = np.concatenate([
                r[field] if r[field] is not None and len(r[field]) else np.zeros((0, width), np.int32)
                for r in results
            ]).astype(np.int64)
        return out

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        results = self._dedup(results)
        data = self._gather(results)
        meta = self.dataset_meta or {}
        names = list(meta.get('classes') or [])
        num_classes = len(names) or None
        labels, is_thing = data['labels'], data['is_thing']
        protocol = meta.get('region_protocol', 'ours')
        rounding = (protocol == 'reference' if self.reference_rounding is None else
                    bool(self.reference_rounding))
        empty = data['mask_empty']
        if data['mask'] is not None and empty.any():
            data['mask'] = data['mask'].copy()
            data['mask'][empty] = -1  # no mask feature: scored as misclassified, and counted
        metrics: Dict[str, float] = {}
        per_class: Dict[str, dict] = {}
        counts: Dict[str, int] = {}
        empty_counts: Dict[str, int] = {}
        for name, field, thing, _ in SPLITS:
            pred = data[field]
            if pred is None:
                continue
            sel = is_thing if thing else ~is_thing
            counts[name] = int(sel.sum())
            res = mean_class_accuracy(pred[sel], labels[sel], self.topk, num_classes, rounding)
            metrics.update({f'{name}.{k}': v for k, v in res.items()})
            if field == 'mask':
                empty_counts[name] = int((empty & sel).sum())
                if empty.any():  # the key is there only when some mask vanished
                    metrics[f'{name}.empty'] = empty_counts[name]
            if self.out_file and sel.any():
                per_class[name] = self._per_class(pred[sel], labels[sel], names)

        table = format_region_table({self.model_name: metrics}, self.topk)
        extra = ', '.join(f'{k}: {_fmt(metrics.get(k))}' for k in
                          (f'boxes_stuff.top{k}' for k in self.topk) if k in metrics)
        notes = [f'(not in the paper) {extra}'] if extra else []
        if any(empty_counts.values()):
            notes.append('empty masks (no pixel on the grid; scored as misclassified): '
                         + ', '.join(f'{k} {v}' for k, v in empty_counts.items()))
        print_log(f'Region classification ({protocol} protocol), mean class accuracy (%) over '
                  f'{len(results)} images, {int(is_thing.sum())} thing / '
                  f'{int((~is_thing).sum())} stuff regions\n{table}'
                  + ''.join(f'\n{n}' for n in notes), logger='current')

        if self.out_file:
            self._makedirs(self.out_file)
            with open(self.out_file, 'w') as f:
                json.dump(dict(model=self.model_name, metrics=metrics, num_images=len(results),
                               num_regions=counts, region_protocol=protocol,
                               empty_masks=empty_counts, reference_rounding=rounding,
                               per_class=per_class), f, indent=1)
        if self.save_predictions:
            self._makedirs(self.save_predictions)
            arrays = dict(labels=labels, is_thing=is_thing, image_index=data['image_index'],
                          img_paths=np.asarray([str(r['img_path']) for r in results]),
                          class_names=np.asarray(names, dtype=str),
                          class_is_thing=np.asarray(meta.get('is_thing') or [], dtype=bool))
            for field in ('box', 'mask'):
                if data[field] is not None:
                    arrays[f'{field}_topk'] = data[field]
            np.savez_compressed(self.save_predictions, **arrays)
        return metrics

    def _per_class(self, pred: np.ndarray, labels: np.ndarray, names: List[str]) -> dict:
        out = {}
        accs = {k: per_class_accuracy(correct_at_k(pred, labels, k), labels, len(names) or None)
                for k in self.topk}
        count = accs[self.topk[0]][1]
        for c in np.flatnonzero(count):
            name = names[c] if c < len(names) else str(int(c))
            out[name] = dict(n=int(count[c]),
                             **{f'top{k}': float(accs[k][0][c] * 100) for k in self.topk})
        return out

    @staticmethod
    def _makedirs(path: str) -> None:
        folder = osp.dirname(osp.abspath(path))
        os.makedirs(folder, exist_ok=True)
