"""Shared test helpers."""
import importlib.util
import sys
from pathlib import Path

import pytest


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



@pytest.fixture(scope='session')
def demo(tmp_path_factory):
    """Root of a tiny-demo set-up shared by the model tests (4 synthetic images, random tiny
    student and P-VLM, their text embeddings); tests must not modify it."""
    from densevlm_mm.utils.tiny_demo import prepare_tiny_demo
    root = str(tmp_path_factory.mktemp('tiny_demo'))
    prepare_tiny_demo(root, num_images=4)
    return root
