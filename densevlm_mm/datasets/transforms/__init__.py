from .crops import CropGridRegions
from .formatting import PackDenseVLMInputs
from .loading import LoadImageSafe, get_skipped_images, reset_skipped_images
from .panoptic import LoadPanopticRegions
from .region_sampler import GridRegionSampler, reference_grid_pairs
from .region_sampling import SampleGridRegions
from .region_targets import LoadRegionTargets
from .resize_pad import ResizeLongestPad
from .seg_labels import LoadCheckedSegAnnotations, check_label_map

__all__ = [
    'LoadImageSafe', 'LoadPanopticRegions', 'ResizeLongestPad', 'SampleGridRegions',
    'PackDenseVLMInputs', 'CropGridRegions', 'get_skipped_images', 'reset_skipped_images',
    'GridRegionSampler', 'reference_grid_pairs', 'LoadRegionTargets', 'LoadCheckedSegAnnotations',
    'check_label_map'
]
