"""Image crops of the regions, for teachers that embed each region as a whole image (CLIPSelf)."""
from typing import Dict

import numpy as np
from mmcv.transforms import BaseTransform
from PIL import Image

from densevlm_mm.registry import TRANSFORMS


def resize_max_size(crop: np.ndarray, size: int) -> np.ndarray:
    """Longest side to ``size`` (PIL bicubic), centred zero padding to ``size×size`` (the
    reference's ``ResizeMaxSize``, spec §2)."""
    h, w = crop.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(crop).resize((nw, nh), Image.BICUBIC))
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out


@TRANSFORMS.register_module()
class CropGridRegions(BaseTransform):
    """Cut every ``grid_boxes`` region out of the original image → ``region_crops``
    ``[K, size, size, 3]`` uint8.

    Needs ``ori_img`` (``ResizeLongestPad(keep_ori=True)``) and ``scale_factor``; boxes are mapped
    back to original pixels, optionally enlarged by ``crop_scale`` about their centre (clipped to
    the image), and resized with :func:`resize_max_size`.
    """

    def __init__(self, size: int = 224, crop_scale: float = 1.0) -> None:
        self.size, self.crop_scale = size, crop_scale

    def transform(self, results: Dict) -> Dict:
        if 'ori_img' not in results or 'grid_boxes' not in results:
            raise KeyError('CropGridRegions needs "ori_img" and "grid_boxes": use '
                           'ResizeLongestPad(keep_ori=True) and SampleGridRegions before it')
        img = results.pop('ori_img')
        h, w = img.shape[:2]
        sx, sy = results['scale_factor']
        crops = []
        for x0, y0, x1, y1 in np.asarray(results['grid_boxes'], dtype=np.float64):
            x0, x1, y0, y1 = x0 / sx, x1 / sx, y0 / sy, y1 / sy
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            hw, hh = (x1 - x0) * self.crop_scale / 2, (y1 - y0) * self.crop_scale / 2
            l, r = int(max(0, round(cx - hw))), int(min(w, round(cx + hw)))
            t, b = int(max(0, round(cy - hh))), int(min(h, round(cy + hh)))
            r, b = max(r, l + 1), max(b, t + 1)
            crops.append(resize_max_size(np.ascontiguousarray(img[t:b, l:r]), self.size))
        results['region_crops'] = np.stack(crops) if crops else np.zeros(
            (0, self.size, self.size, 3), np.uint8)
        return results
