"""Shared test helpers."""
import importlib.util
import os
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


def load_tool(relpath: str):
    """A ``tools/`` script (``relpath`` under ``tools/``, e.g. ``'analysis/benchmark.py'``) as a
    fresh module; its folder goes on ``sys.path`` for the script's own sibling imports."""
    path = Path(__file__).resolve().parent.parent / 'tools' / relpath
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    name = 'densevlm_tool_' + relpath[:-len('.py')].replace('/', '_')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


@pytest.fixture(scope='module')
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures(...)``): the tiny
    models' ops are too small for two threads, and far slower on a loaded machine."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


DEMO_IMAGES = 4
DEMO_ENV = 'DENSEVLM_TEST_DEMO'  # a finished shared demo (tools/mutation.py sets it)
_DEMO_DONE = '.demo-complete'


def prepare_test_demo(root: str) -> str:
    """The tiny-demo set-up of the ``demo`` fixture in ``root``, marked complete at the end."""
    from densevlm_mm.apis.tiny_demo import prepare_tiny_demo
    prepare_tiny_demo(root, num_images=DEMO_IMAGES)
    Path(root, _DEMO_DONE).touch()
    return root


@pytest.fixture(scope='session')
def demo(tmp_path_factory):
    """Root of a tiny-demo set-up shared by the model tests (4 synthetic images, random tiny
    student and P-VLM, their text embeddings); tests must not modify it.

    When ``$DENSEVLM_TEST_DEMO`` names a finished one (mutation testing prepares it once with
    the unmutated package, instead of ~7 s in every mutant's pytest session), it is used as is.
    """
    shared = os.environ.get(DEMO_ENV)
    if shared and Path(shared, _DEMO_DONE).is_file():
        return shared
    return prepare_test_demo(str(tmp_path_factory.mktemp('tiny_demo')))
