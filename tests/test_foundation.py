"""The environment and the skeleton everything else stands on.

* the pinned packages import and have the pinned versions;
* mmcv's compiled ops (RoIAlign, nms) run on CPU and are right on hand-checkable inputs;
* the ``densevlm_mm`` core imports without mmdet, mmseg or mmcv.ops;
* the ``densevlm_mm`` registries hang under mmengine's root and reach other scopes by prefix.
"""
import importlib
import importlib.metadata
import os.path as osp
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# module name, distribution name, pinned version
PINS = [
    ('torch', 'torch', '2.14.1'),
    ('torchvision', 'torchvision', '0.29.1'),
    ('mmengine', 'mmengine', '0.10.7'),
    ('mmcv', 'mmcv', '2.1.0'),
    ('mmdet', 'mmdet', '3.3.0'),
    ('mmseg', 'mmsegmentation', '1.2.2'),
    ('mmpretrain', 'mmpretrain', '1.2.0'),
    ('open_clip', 'open_clip_torch', '3.3.0'),
    ('timm', 'timm', '1.0.31'),
]


def _base_version(version: str) -> str:
    """``2.14.1+cu130`` -> ``2.14.1`` (the local build tag is not part of the pin)."""
    return version.split('+')[0]


@pytest.mark.parametrize('module_name,dist_name,pinned', PINS, ids=[p[0] for p in PINS])
def test_pinned_package_version(module_name, dist_name, pinned):
    module = importlib.import_module(module_name)
    assert _base_version(module.__version__) == pinned, (
        f'{module_name}.__version__ is {module.__version__}, pinned {pinned}')
    assert _base_version(importlib.metadata.version(dist_name)) == pinned


def test_open_clip_is_the_installed_package():
    """``import open_clip`` finds site-packages, not a folder of this repository."""
    import open_clip
    path = Path(open_clip.__file__).resolve()
    assert 'site-packages' in path.parts, f'open_clip imported from {path}'
    dist_files = importlib.metadata.distribution('open_clip_torch').locate_file('open_clip')
    assert path.parent == Path(dist_files).resolve()
    assert not (REPO_ROOT / 'open_clip').exists()
    assert not (REPO_ROOT / 'densevlm_mm' / 'open_clip').exists()


def test_mmcv_roi_align_on_cpu():
    from mmcv.ops import RoIAlign

    # a constant map gives the constant for every bin
    feats = torch.full((1, 2, 8, 8), 3.0)
    rois = torch.tensor([[0., 1., 1., 6., 5.], [0., 0., 0., 8., 8.]])
    out = RoIAlign((2, 3), spatial_scale=1.0, sampling_ratio=2, aligned=True)(feats, rois)
    assert out.shape == (2, 2, 2, 3)
    torch.testing.assert_close(out, torch.full_like(out, 3.0))

    # a ramp f(x, y) = x (pixel i holds i, its centre is at i + 0.5 with aligned=True): bilinear
    # sampling is exact, so each bin is the ramp at the bin centre minus 0.5
    ramp = torch.arange(8.).expand(8, 8).reshape(1, 1, 8, 8).contiguous()
    box = torch.tensor([[0., 2., 2., 6., 6.]])  # bins of width 2 centred on x = 3 and x = 5
    out = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2, aligned=True)(ramp, box)
    torch.testing.assert_close(out[0, 0], torch.tensor([[2.5, 4.5], [2.5, 4.5]]))

    # spatial_scale maps image coordinates onto the feature map (stride 2 here)
    out = RoIAlign((2, 2), spatial_scale=0.5, sampling_ratio=2, aligned=True)(
        ramp, box * torch.tensor([1., 2., 2., 2., 2.]))
    torch.testing.assert_close(out[0, 0], torch.tensor([[2.5, 4.5], [2.5, 4.5]]))


def test_mmcv_nms_on_cpu():
    from mmcv.ops import nms

    boxes = torch.tensor([[0., 0., 10., 10.],     # kept: the highest score
                          [1., 1., 11., 11.],     # IoU 81/119 = 0.68 with box 0: dropped
                          [20., 20., 30., 30.],   # disjoint: kept
                          [0., 0., 10., 5.]])     # IoU 0.5 with box 0: kept at threshold 0.6
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    dets, keep = nms(boxes, scores, iou_threshold=0.6)
    assert keep.tolist() == [3, 0, 2]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.95, 0.9, 0.7]))
    torch.testing.assert_close(dets[:, :4], boxes[[3, 0, 2]])

    # at 0.4 box 0 overlaps box 3 too much, so box 1 (IoU 36/114 = 0.32 with box 3) survives
    _, keep = nms(boxes, scores, iou_threshold=0.4)
    assert keep.tolist() == [3, 1, 2]


BLOCKED_IMPORT_SCRIPT = textwrap.dedent('''
    import importlib.abc
    import sys

    BLOCKED = ('mmdet', 'mmseg', 'mmcv.ops')

    def blocked(name):
        return any(name == b or name.startswith(b + '.') for b in BLOCKED)

    class BlockOptionalPackages(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if blocked(name):
                raise ImportError(f'{name} is blocked: the densevlm_mm core must not need it')
            return None

    assert not [m for m in sys.modules if blocked(m)]
    sys.meta_path.insert(0, BlockOptionalPackages())

    import densevlm_mm
    import densevlm_mm.models
    import densevlm_mm.datasets
    import densevlm_mm.evaluation
    import densevlm_mm.engine
    import densevlm_mm.visualization
    import densevlm_mm.vocabulary
    import densevlm_mm.text_embeddings
    from densevlm_mm.utils import register_all_modules
    register_all_modules(init_default_scope=True)

    leaked = sorted(m for m in sys.modules if blocked(m))
    assert not leaked, f'imported although blocked: {leaked}'
    print('CORE-IMPORTS-OK')
''')


def test_core_imports_without_mmdet_mmseg_mmcv_ops():
    proc = subprocess.run([sys.executable, '-c', BLOCKED_IMPORT_SCRIPT],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and 'CORE-IMPORTS-OK' in proc.stdout, (
        f'exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}')


@pytest.fixture
def restore_default_scope():
    """Undo the DefaultScope instances a test creates (they are process-global)."""
    from mmengine.registry import DefaultScope
    saved = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)


def test_registry_is_a_child_of_the_mmengine_root():
    from mmengine.registry import DATASETS as ROOT_DATASETS
    from mmengine.registry import MODELS as ROOT_MODELS

    from densevlm_mm import registry
    assert registry.MODELS.scope == 'densevlm_mm'
    assert registry.MODELS.parent is ROOT_MODELS
    assert registry.DATASETS.parent is ROOT_DATASETS
    assert ROOT_MODELS._search_child('densevlm_mm') is registry.MODELS
    for name in registry.__all__:
        if name != 'SCOPE':
            assert getattr(registry, name).scope == 'densevlm_mm', name


def test_register_all_modules_sets_default_scope(restore_default_scope):
    from mmengine.registry import DefaultScope

    from densevlm_mm.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    assert DefaultScope.get_current_instance().scope_name == 'densevlm_mm'


def test_registry_resolves_other_scopes_by_prefix(restore_default_scope):
    from densevlm_mm.registry import MODELS
    from densevlm_mm.utils import register_all_modules
    register_all_modules(init_default_scope=True)

    # the registry imports mmdet itself (the core never does; this is the only test that needs it)
    neck = MODELS.build(dict(type='mmdet.FPN', in_channels=[4, 8], out_channels=4, num_outs=2))
    assert type(neck).__name__ == 'FPN' and type(neck).__module__.startswith('mmdet.')
    assert 'mmdet' in sys.modules
    outs = neck([torch.zeros(1, 4, 8, 8), torch.zeros(1, 8, 4, 4)])
    assert [tuple(o.shape) for o in outs] == [(1, 4, 8, 8), (1, 4, 4, 4)]

    with pytest.raises(KeyError, match='NoSuchModuleForTheRegistryTest'):
        MODELS.build(dict(type='NoSuchModuleForTheRegistryTest'))


def test_package_root_is_this_repository():
    import densevlm_mm
    assert osp.dirname(osp.abspath(densevlm_mm.__file__)) == str(REPO_ROOT / 'densevlm_mm')
