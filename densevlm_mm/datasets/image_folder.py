"""Unlabeled training images from a folder tree, and the retry logic shared by map-style datasets.

DenseVLM trains on images only (the grid regions are drawn per image, no annotation is used), so any
folder of images is a training set.
"""
import errno
import os.path as osp
from typing import List, Sequence

import numpy as np
from mmengine.dataset import BaseDataset
from mmpretrain.datasets.custom import CustomDataset

from densevlm_mm.registry import DATASETS

from .data_epoch import data_epoch_record, sample_seed

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


class UnlabeledImageDataset(BaseDataset):
    """A map-style dataset of image paths whose training pipeline may return ``None``.

    When the pipeline rejects a sample (``LoadImageSafe`` could not read it), another random index
    is drawn, as mmengine's :class:`BaseDataset` does, but the failure is explained: after
    ``max_refetch`` failures in a row, or once every index has failed, a ``RuntimeError`` names the
    data source and the last path tried. Subclasses set ``self.source`` (what to name) and
    implement ``load_data_list``; each sample's ``image_key`` (its path relative to the data set)
    keys the P-VLM region cache.

    The index tried instead of a failed one comes from the dataset's own generator, seeded by the
    Runner's seed, the epoch, the failed index and the attempt (:meth:`retry_index`), not from
    numpy's global random state (mmengine's ``_rand_another``): the same in every dataloader
    worker and after an exact resume.
    """

    source: str = ''

    def __init__(self, *args, max_refetch: int = 100, **kwargs) -> None:
        self._epoch_record = data_epoch_record()  # spawned workers share the parent's record
        super().__init__(*args, max_refetch=max_refetch, **kwargs)

    def retry_index(self, idx: int, attempt: int) -> int:
        """The index read after ``idx`` failed, at retry ``attempt`` (0, 1, ...): a function of
        ``(seed, epoch, idx, attempt)`` with the epoch and seed published by ``tools/train.py``
        (epoch 0, seed 0 before that)."""
        epoch, seed = self._epoch_record.get() or (0, 0)
        rng = np.random.default_rng(sample_seed(seed, epoch, int(idx), salt=attempt + 1))
        return int(rng.integers(len(self)))

    def __getitem__(self, idx: int) -> dict:
        if self.test_mode:
            return super().__getitem__(idx)
        if not self._fully_initialized:
            self.full_init()
        failed = set()
        for attempt in range(self.max_refetch + 1):
            data = self.prepare_data(idx)
            if data is not None:
                return data
            failed.add(idx)
            if len(failed) >= len(self):
                break
            idx = self.retry_index(idx, attempt)
        everything = len(failed) >= len(self)
        last = self.get_data_info(idx).get('img_path', f'index {idx}')
        what = (f'none of the {len(self)} images' if everything else
                f'{self.max_refetch + 1} samples in a row (e.g. {last})')
        raise RuntimeError(
            f'{type(self).__name__}: {what} could be loaded from {self.source}; last tried: '
            f'{last}. Unreadable or too small images are listed in the warnings above; check the '
            'image files and the pipeline.')


@DATASETS.register_module()
class ImageFolderDataset(UnlabeledImageDataset, CustomDataset):
    """All images under ``data_root`` (recursive, sorted by relative path): mmpretrain's
    :class:`~mmpretrain.datasets.CustomDataset` with ``with_label=False``.

    Each sample is ``dict(img_path, image_key)`` for :class:`LoadImageSafe`, ``image_key`` being
    the path relative to ``data_root`` with ``/`` separators. Extensions are matched
    case-insensitively (given with or without the dot); hidden files *and folders* (names
    starting with ``.``) are ignored; symbolic links to folders are followed (a link loop raises
    an ``OSError`` naming it).

    Args:
        data_root: the folder to scan.
        pipeline: the training pipeline (starting with ``LoadImageSafe``).
        extensions: file name endings that count as images.
        **kwargs: other :class:`mmengine.dataset.BaseDataset` arguments (``indices``,
            ``serialize_data``, ``lazy_init``, ``max_refetch``...).

    Raises:
        FileNotFoundError: ``data_root`` is not a folder, or holds no image file.
    """

    def __init__(self,
                 data_root: str,
                 pipeline: Sequence = (),
                 extensions: Sequence[str] = IMG_EXTENSIONS,
                 **kwargs) -> None:
        if isinstance(extensions, str):
            extensions = (extensions, )
        extensions = tuple(e.lower() if e.startswith('.') else f'.{e.lower()}'
                           for e in extensions)
        self.source = f'image folder {data_root!r}'
        super().__init__(data_root=data_root, pipeline=list(pipeline), with_label=False,
                         extensions=extensions, **kwargs)
        self.extensions = tuple(sorted(self.extensions))

    def load_data_list(self) -> List[dict]:
        root = self.data_root
        if not osp.isdir(root):
            raise FileNotFoundError(f'{type(self).__name__}: image folder not found: {root!r}')
        try:
            data_list = super().load_data_list()
            for info in data_list:
                rel = osp.relpath(info['img_path'], self.img_prefix)
                info['image_key'] = rel.replace(osp.sep, '/')
            return data_list
        except RuntimeError as exc:  # mmpretrain: "Found 0 files in subfolders of ..."
            raise FileNotFoundError(
                f'{type(self).__name__}: no image file ({", ".join(sorted(self.extensions))}) '
                f'found under {root!r}') from exc
        except OSError as exc:  # the listing follows folder links: a loop ends here
            if exc.errno != errno.ELOOP:
                raise
            raise OSError(exc.errno, f'{type(self).__name__}: a symbolic link loop under {root!r} '
                          f'({exc.filename}); remove the link that points to a folder above '
                          'it') from exc

    def is_valid_file(self, filename: str) -> bool:
        """An image name, in no hidden folder: mmengine's listing skips hidden files but walks
        into hidden folders (``.git``, ``.ipynb_checkpoints``)."""
        return super().is_valid_file(filename) and not any(
            part.startswith('.') for part in filename.replace('\\', '/').split('/'))
