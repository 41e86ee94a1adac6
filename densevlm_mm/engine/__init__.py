"""Hooks and runner utilities."""
from .eval_class_check_hook import EvalClassCheckHook, check_class_names
from .hooks import *  # noqa: F401,F403
