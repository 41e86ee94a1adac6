"""Resize the longest side and pad bottom/right (the reference's det transform, spec §2)."""
from typing import Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from PIL import Image

from densevlm_mm.registry import TRANSFORMS


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
    """

    def __init__(self, size: Union[int, Sequence[int]] = 512, pad_val: int = 0,
                 interpolation: str = 'bicubic', keep_ori: bool = False) -> None:
        self.keep_ori = keep_ori
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
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, pad_val={self.pad_val})'
