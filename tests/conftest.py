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


# Test modules of the mmdet / mmseg models: their Runners set and rely on their own scope.
_DOWNSTREAM = ('fvit', 'san', 'catseg', 'ov_detection', 'seg_datasets', 'test_demo',
               'test_apis')


@pytest.fixture(autouse=True)
def _densevlm_default_scope(request):
    """Run every test of the core with ``densevlm_mm`` as mmengine's current default scope.

    A Runner of an mmdet / mmseg config (F-ViT, SAN, CAT-Seg) creates a ``DefaultScope`` named
    after its scope, and mmengine keeps the newest one current for the whole process: later builds
    of ``densevlm_mm`` modules would then look in the mmseg registry. One process runs one scope in
    real use; the test session runs many, so core tests get theirs back here.
    """
    from mmengine.registry import DefaultScope
    name = Path(str(request.node.fspath)).stem
    if not any(key in name for key in _DOWNSTREAM) and DefaultScope._instance_dict:
        current = DefaultScope.get_current_instance()
        if current.scope_name != 'densevlm_mm':
            ours = [n for n, s in DefaultScope._instance_dict.items()
                    if s.scope_name == 'densevlm_mm']
            if ours:
                DefaultScope._instance_dict.move_to_end(ours[-1])
            else:
                DefaultScope.get_instance('densevlm_mm-tests', scope_name='densevlm_mm')
    yield


@pytest.fixture(autouse=True)
def _fresh_skipped_image_record(monkeypatch):
    """Every test starts without a skipped-image record (``LoadImageSafe``'s shared counter).

    The record lives in shared memory and forked children keep using their parent's one (that
    is how dataloader workers report to the main process). Processes forked from one test
    process, as mutmut's parallel mutants are, would otherwise count each other's skips.
    """
    from densevlm_mm.datasets.transforms import loading
    monkeypatch.setattr(loading, '_RECORD', None)
    monkeypatch.setattr(loading, '_RECORD_PID', None)
    yield


@pytest.fixture(scope='session')
def demo(tmp_path_factory):
    """Root of a tiny-demo set-up shared by the model tests (4 synthetic images, random tiny
    student and P-VLM, their text embeddings); tests must not modify it."""
    from densevlm_mm.apis.tiny_demo import prepare_tiny_demo
    root = str(tmp_path_factory.mktemp('tiny_demo'))
    prepare_tiny_demo(root, num_images=4)
    return root
