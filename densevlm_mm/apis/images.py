"""Reading users' images: files, arrays or PIL images → uint8 RGB ``[H, W, 3]``.

EXIF orientation is applied (``PIL.ImageOps.exif_transpose``: a phone photo shows upright, as in an
image viewer), 16-bit and float images are scaled to 0..255 instead of being clipped to white,
grayscale / palette / alpha images become RGB. A file that cannot be decoded raises an error that
names it.
"""
import os
import os.path as osp
from typing import List, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageLike = Union[str, os.PathLike, np.ndarray, Image.Image]

#: file extensions taken as images when a directory is scanned
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.gif', '.ppm',
                    '.pgm', '.jfif')


class ImageReadError(ValueError):
    """An image file or array that cannot be turned into an RGB image."""


def _to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    """Scale an integer / float array of any depth to uint8 (16-bit: ``/257``; float in [0, 1]:
    ``·255``)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        finite = arr[np.isfinite(arr)]
        if finite.size == 0:
            raise ImageReadError(f'{what}: the image has no finite pixel value')
        top = float(finite.max())
        scale = 255.0 if top <= 1.0 else (1.0 if top <= 255.0 else 255.0 / 65535.0)
        return np.clip(np.nan_to_num(arr.astype(np.float64)) * scale, 0, 255).round() \
            .astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        top = int(arr.max()) if arr.size else 0
        # 16-bit data (PNG 'I;16' / 'I' modes, uint16 arrays): the full range maps to 0..255.
        if arr.dtype.itemsize > 1 and (top > 255 or arr.dtype in (np.uint16, np.int16)):
            return np.clip(arr.astype(np.float64) / 257.0, 0, 255).round().astype(np.uint8)
        return np.clip(arr, 0, 255).astype(np.uint8)
    raise ImageReadError(f'{what}: unsupported pixel type {arr.dtype}')


def _array_to_rgb(arr: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(_to_uint8(arr, what)[..., None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = _to_uint8(arr[..., :3], what)
    else:
        raise ImageReadError(f'{what}: expected an image array [H, W], [H, W, 3] or [H, W, 4], got '
                             f'shape {arr.shape}')
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageReadError(f'{what}: the image is empty (shape {arr.shape})')
    return np.ascontiguousarray(arr)


def _pil_to_rgb(im: Image.Image, what: str) -> np.ndarray:
    im = ImageOps.exif_transpose(im)
    if im.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F'):
        return _array_to_rgb(np.asarray(im), what)
    if im.mode != 'RGB':
        im = im.convert('RGBA').convert('RGB') if 'A' in im.mode or im.mode == 'P' \
            else im.convert('RGB')
    return _array_to_rgb(np.asarray(im), what)


def load_image(image: ImageLike) -> np.ndarray:
    """Any image → uint8 RGB ``[H, W, 3]``, upright (EXIF orientation applied).

    Args:
        image: a file path, a PIL image, or an array ``[H, W]`` / ``[H, W, 3|4]`` (RGB order; uint8,
            uint16 or float in [0, 1]).

    Raises:
        FileNotFoundError: the path does not exist.
        ImageReadError: the file is not a decodable image, or the array has no image shape.
    """
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, 'PIL image')
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, 'image array')
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not osp.exists(path):
            raise FileNotFoundError(f'image not found: {path!r}')
        if osp.isdir(path):
            raise ImageReadError(f'{path!r} is a directory, not an image')
        try:
            with Image.open(path) as im:
                im.load()
                return _pil_to_rgb(im, path)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            if isinstance(exc, ImageReadError):
                raise
            raise ImageReadError(f'cannot read the image {path!r}: {exc}. Is it an image file '
                                 f'({", ".join(IMAGE_EXTENSIONS)}) and complete?') from exc
    raise TypeError(f'image must be a path, a numpy array or a PIL image, got '
                    f'{type(image).__name__}')


def collect_images(inputs: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Expand files and directories into image files.

    Directories are scanned (not recursively, sorted by name); files whose extension is not an
    image extension are skipped with a reason. Explicitly named files are kept whatever their
    extension (an unreadable one fails later with a clear error). Missing paths raise.

    Returns:
        ``(image_paths, skipped)`` where ``skipped`` lists ``(path, reason)``.

    Raises:
        FileNotFoundError: an input path does not exist.
    """
    images: List[str] = []
    skipped: List[Tuple[str, str]] = []
    for item in inputs:
        if not osp.exists(item):
            raise FileNotFoundError(f'image not found: {item!r}')
        if osp.isdir(item):
            for name in sorted(os.listdir(item)):
                path = osp.join(item, name)
                if osp.isdir(path):
                    skipped.append((path, 'a sub-directory (directories are not scanned '
                                          'recursively)'))
                elif name.lower().endswith(IMAGE_EXTENSIONS):
                    images.append(path)
                else:
                    skipped.append((path, 'not an image file extension'))
        else:
            images.append(item)
    return images, skipped
