"""Hooks, schedulers and runner utilities."""
from .hooks import *  # noqa: F401,F403
from .optim_constructor import FrozenAwareOptimWrapperConstructor
from .optim_wrappers import CPUAmpOptimWrapper
from .runner import DenseVLMRunner, concise_runner_class, finish_distributed, setup_distributed
from .schedulers import CosineAfterWarmupLR
from .work_dir_lock import WorkDirInUseError, hold_work_dir
