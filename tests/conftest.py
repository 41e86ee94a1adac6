"""Shared test helpers."""
import importlib.util
import sys
from pathlib import Path


def load_panoptic_fixtures():
    """``tests/fixtures/panoptic.py`` as a module, loaded by path: site-packages holds packages
    named ``tests`` (mmseg, model_index) that would shadow ours."""
    name = 'densevlm_tests_fixtures_panoptic'
    if name not in sys.modules:
        path = Path(__file__).resolve().parent / 'fixtures' / 'panoptic.py'
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]

