"""Resize the longest side and pad bottom/right (the reference's det transform, spec §2)."""
from typing import Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from PIL import Image

from densevlm_mm.registry import TRANSFORMS

from .loading import _get_record as skip_record
from .loading import skip_with


@TRANSFORMS.register_module()
class ResizeLongestPad(BaseTransform):
    """Fit the image into ``size`` keeping its aspect ratio, then pad bottom/right.

    With ``size=512`` the longer side becomes 512 (``round(side · 512 / max(H, W))``), resized with
    PIL bicubic like the reference, and the canvas is padded to 512×512 with ``pad_val`` *before*
    normalisation (black). A rectangular ``size=(h, w)`` fits the image inside ``h×w``.

    Required keys: ``img`` (uint8 RGB ``[H, W, 3]``). Optional keys scaled along: ``region_boxes``
    ``[K, 4]`` xyxy (pixels), ``region_masks`` ``[K, H, W]`` bool (nearest neighbour).
    Added keys: ``img_shape`` (padded h, w), ``valid_hw`` (resized content h, w), ``scale_factor``
    (w, h scale), ``pad_shape``; ``ori_img`` (the image before resizing) when ``keep_ori``
    (:class:`CropGridRegions` cuts the CLIPSelf teacher's crops from it).

    Images too thin for the model: a training sample (one without evaluation regions
    ``region_boxes``) whose shorter side would be below ``min_valid_side`` pixels after resizing
    (e.g. 3000×40 → 512×7, less than one 16-px patch: a strip narrower than one feature cell) is
    skipped: the transform returns ``None`` and counts it with the unreadable images
    (``SkippedImagesHook`` logs the count); the dataset draws another sample. Evaluation samples
    are kept (dropping one would change the metric). ``min_valid_side=0`` keeps every image.

    Args:
        size: target ``int`` (square canvas) or ``(h, w)``.
        pad_val: padding value (before normalisation).
        interpolation: ``'bicubic'`` (reference), ``'bilinear'`` or ``'nearest'``.
        keep_ori: keep the image before resizing as ``ori_img``.
        min_valid_side: smallest shorter side after resizing of a training image (default 16 =
            one patch of the ViT-B/16 models; the coarser RN/ConvNeXt grids have 32 px cells).
    """

    def __init__(self, size: Union[int, Sequence[int]] = 512, pad_val: int = 0,
                 interpolation: str = 'bicubic', keep_ori: bool = False,
                 min_valid_side: int = 16) -> None:
        self.keep_ori = keep_ori
        if int(min_valid_side) < 0:
            raise ValueError(f'min_valid_side must be >= 0, got {min_valid_side}')
        self.min_valid_side = int(min_valid_side)
        self._record = skip_record()  # spawned workers count into the main process's record
        self.size: Tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ValueError(f'size must be a positive int or (h, w), got {size!r}')
        self.pad_val = pad_val
        modes = dict(bicubic=Image.BICUBIC, bilinear=Image.BILINEAR, nearest=Image.NEAREST)
        if interpolation not in modes:
            raise ValueError(f'interpolation must be one of {sorted(modes)}, got {interpolation!r}')
        self.interpolation = modes[interpolation]

    def transform(self, results: Dict) -> Optional[Dict]:
        img = results['img']
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'ResizeLongestPad expects an RGB [H, W, 3] array in "img" '
                             f'({results.get("img_path", "?")}), got '
                             f'{getattr(img, "shape", type(img))}')
        h, w = img.shape[:2]
        if self.keep_ori:
            results['ori_img'] = img
        th, tw = self.size
        scale = min(th / h, tw / w)
        nh, nw = min(th, max(1, round(h * scale))), min(tw, max(1, round(w * scale)))
        if min(nh, nw) < self.min_valid_side and 'region_boxes' not in results:
            skip_with(self._record, results.get('img_path', '<image>'),
                      f'too thin for the model: {w}x{h} becomes {nw}x{nh} at {tw}x{th}, shorter '
                      f'side < min_valid_side={self.min_valid_side} px (ResizeLongestPad)')
            return None
        if (nh, nw) != (h, w):
            img = np.asarray(Image.fromarray(img).resize((nw, nh), self.interpolation))
        canvas = np.full((th, tw, 3), self.pad_val, dtype=np.uint8)
        canvas[:nh, :nw] = img
        sx, sy = nw / w, nh / h
        results['img'] = canvas
        results['img_shape'] = (th, tw)
        results['pad_shape'] = (th, tw)
        results['valid_hw'] = (nh, nw)
        results['scale_factor'] = (sx, sy)
        if results.get('region_protocol', 'ours') == 'reference':
            self._reference_regions(results, (h, w), (th, tw))
            return results
        if 'region_boxes' in results:
            boxes = np.asarray(results['region_boxes'], dtype=np.float32).reshape(-1, 4).copy()
            boxes[:, [0, 2]] *= sx
            boxes[:, [1, 3]] *= sy
            results['region_boxes'] = boxes
        if 'region_masks' in results:
            masks = np.asarray(results['region_masks'], dtype=bool)
            out = np.zeros((masks.shape[0], th, tw), dtype=bool)
            for i, mask in enumerate(masks):
                out[i, :nh, :nw] = cv2.resize(mask.astype(np.uint8), (nw, nh),
                                              interpolation=cv2.INTER_NEAREST) > 0
            results['region_masks'] = out
            results['region_mask_empty'] = ~out.any(axis=(1, 2))
        return results

    @staticmethod
    def _reference_regions(results: Dict, ori_hw: Tuple[int, int],
                           canvas_hw: Tuple[int, int]) -> None:
        """Boxes and masks of the reference evaluation protocol (see ``PanopticRegionDataset``):
        boxes with one isotropic scale onto the dense grid, masks at grid size (0/1)."""
        stride = results.get('grid_stride')
        if not stride:
            raise KeyError(f"region_protocol='reference' needs 'grid_stride' in the sample "
                           f"({results.get('img_path', '?')}); set it on the dataset")
        (h, w), (th, tw) = ori_hw, canvas_hw
        gh, gw = th // stride, tw // stride
        if 'region_boxes' in results:
            scale = min(th / h, tw / w)
            boxes = np.asarray(results['region_boxes'], dtype=np.float64).reshape(-1, 4).copy()
            # normalised by the canvas, then mapped by grid size (not 1/stride) like the reference:
            # in input pixels for roi_features' 1/stride that is x · scale · (g·stride / canvas)
            boxes[:, [0, 2]] *= scale * gw * stride / tw
            boxes[:, [1, 3]] *= scale * gh * stride / th
            results['region_boxes'] = boxes.astype(np.float32)
        if 'region_masks' in results:
            masks = reference_grid_masks(np.asarray(results['region_masks'], dtype=bool),
                                         (gh, gw))
            results['region_masks'] = masks
            results['region_mask_empty'] = ~masks.any(axis=(1, 2))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(size={self.size}, pad_val={self.pad_val}, '
                f'min_valid_side={self.min_valid_side})')


def reference_grid_masks(masks: np.ndarray, grid_hw: Tuple[int, int],
                         chunk: int = 16) -> np.ndarray:
    """The reference's evaluation masks: ``[K, H, W]`` bool at full resolution → ``[K, gh, gw]``
    bool on the dense grid (spec §6.1).

    Each mask, as float, is resized bicubically without antialiasing (torchvision 0.15 on a tensor:
    ``F.interpolate(mode='bicubic', align_corners=False, antialias=False)``) to
    ``round(side · s)`` with ``s = min(gh / H, gw / W)`` (``g / max(H, W)`` on a square grid,
    Python rounding), padded bottom/right with 0, then thresholded ``> 0``. Bicubic overshoot makes
    the result a little larger than the mask; a small or thin mask can vanish (all False).
    """
    import torch
    import torch.nn.functional as F
    masks = np.asarray(masks, dtype=bool)
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    k, h, w = masks.shape
    scale = min(gh / float(h), gw / float(w))
    nh, nw = min(gh, round(h * scale)), min(gw, round(w * scale))
    out = np.zeros((k, gh, gw), dtype=bool)
    for start in range(0, k, chunk):
        part = torch.from_numpy(masks[start:start + chunk]).float()[:, None]
        resized = F.interpolate(part, size=(nh, nw), mode='bicubic', align_corners=False,
                                antialias=False)
        out[start:start + chunk, :nh, :nw] = (resized[:, 0] > 0).numpy()
    return out
