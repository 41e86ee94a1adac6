"""Hooks, schedulers and runner utilities."""
from .eval_class_check_hook import EvalClassCheckHook, check_class_names
from .optim_constructor import FrozenAwareOptimWrapperConstructor
from .optim_wrappers import CPUAmpOptimWrapper
from .hooks import *  # noqa: F401,F403
from .schedulers import CosineAfterWarmupLR
