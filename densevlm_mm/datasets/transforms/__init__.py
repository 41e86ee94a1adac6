from .formatting import PackDenseVLMInputs
from .region_sampling import SampleGridRegions
from .resize_pad import ResizeLongestPad

__all__ = ['ResizeLongestPad', 'SampleGridRegions', 'PackDenseVLMInputs']
