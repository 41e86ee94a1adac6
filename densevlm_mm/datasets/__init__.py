"""Datasets (training images, panoptic region evaluation) and transforms."""
import warnings

# `python -m densevlm_mm.datasets.sa1b index ...` imports this package (and so the module) before
# runpy executes the module; sa1b.py then hands over to the imported module (see its top), so
# runpy's warning about the module being in sys.modules already does not apply.
warnings.filterwarnings('ignore', message=r"'densevlm_mm\.datasets\.sa1b' found in sys\.modules",
                        category=RuntimeWarning)
from .coco_images import CocoImageDataset
from .coco_pseudo_regions import CocoPseudoRegionDataset
from .data_epoch import clear_data_epoch, get_data_epoch, set_data_epoch
from .image_folder import ImageFolderDataset, UnlabeledImageDataset
from .panoptic_regions import (ADE20KPanopticRegionDataset, CocoPanopticRegionDataset,
                               PanopticRegionDataset)
from .sa1b import SA1BShardDataset
from .synthetic_panoptic import make_synthetic_panoptic, write_panoptic_dataset
from .transforms import *  # noqa: F401,F403

__all__ = [
    'CocoImageDataset', 'CocoPseudoRegionDataset', 'ImageFolderDataset', 'UnlabeledImageDataset',
    'SA1BShardDataset', 'PanopticRegionDataset', 'CocoPanopticRegionDataset',
    'ADE20KPanopticRegionDataset', 'make_synthetic_panoptic', 'write_panoptic_dataset',
    'set_data_epoch', 'get_data_epoch', 'clear_data_epoch'
]
