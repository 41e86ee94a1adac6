"""Datasets (training images, panoptic region evaluation) and transforms."""
from .coco_images import CocoImageDataset
from .coco_pseudo_regions import CocoPseudoRegionDataset
from .image_folder import ImageFolderDataset, UnlabeledImageDataset
from .panoptic_regions import (ADE20KPanopticRegionDataset, CocoPanopticRegionDataset,
                               PanopticRegionDataset)
from .sa1b import SA1BShardDataset
from .synthetic_panoptic import make_synthetic_panoptic, write_panoptic_dataset
from .transforms import *  # noqa: F401,F403

__all__ = [
    'CocoImageDataset', 'CocoPseudoRegionDataset', 'ImageFolderDataset', 'UnlabeledImageDataset', 'SA1BShardDataset',
    'PanopticRegionDataset', 'CocoPanopticRegionDataset', 'ADE20KPanopticRegionDataset',
    'make_synthetic_panoptic', 'write_panoptic_dataset'
]
