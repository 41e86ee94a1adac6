"""DenseVLM end to end through the command-line tools: train, interrupt + resume, test (table +
JSON), and the same config through MMPretrain's own training entry."""
import json
import os
import os.path as osp
import subprocess
import sys

import mmpretrain
import pytest
import torch

from densevlm_mm.apis.tiny_demo import prepare_tiny_demo

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'densevlm', 'densevlm_tiny_demo.py')
FAST = ['train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'val_dataloader.batch_size=8', 'param_scheduler.0.end=1',
        'param_scheduler.1.warmup_iters=1']


@pytest.fixture(scope='module')
def cwd(tmp_path_factory):
    root = tmp_path_factory.mktemp('cli')
    prepare_tiny_demo(str(root / 'work_dirs' / 'tiny_demo'), num_images=8)
    return root


def run(cwd, *args, tool=None):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = [sys.executable, tool or osp.join(REPO, 'tools', 'train.py'), *args]
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def ckpt(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def test_interrupted_run_resumes_and_continues(cwd):
    wd = str(cwd / 'run')
    run(cwd, CONFIG, '--work-dir', wd, '--cfg-options', 'train_cfg.max_epochs=1', *FAST)
    first = ckpt(osp.join(wd, 'epoch_1.pth'))
    assert first['meta']['epoch'] == 1 and first['meta']['iter'] == 2
    assert not any(k.startswith('target_generator.') for k in first['state_dict'])
    log = run(cwd, CONFIG, '--work-dir', wd, '--resume', '--cfg-options',
              'train_cfg.max_epochs=2', *FAST)
    assert 'resumed epoch: 1, iter: 2' in log
    second = ckpt(osp.join(wd, 'epoch_2.pth'))
    assert second['meta']['epoch'] == 2 and second['meta']['iter'] == 4
    # optimizer state continued (Adam step count) and the student moved on
    steps = [s['step'] for s in second['optimizer']['state'].values()]
    assert steps and all(int(s) == 4 for s in steps)
    key = next(k for k in second['state_dict'] if 'blocks.2.mlp' in k)
    assert not torch.equal(first['state_dict'][key], second['state_dict'][key])

    # tools/test.py prints the paper's table and writes the JSON
    out = run(cwd, CONFIG, osp.join(wd, 'epoch_2.pth'), '--work-dir', str(cwd / 'test'),
              tool=osp.join(REPO, 'tools', 'test.py'))
    assert 'Boxes' in out and 'Masks-T' in out and 'Masks-S' in out
    with open(cwd / 'test' / 'region_cls_results.json') as f:
        results = json.load(f)
    assert 'boxes.top1' in json.dumps(results)


def test_config_naming_amp_optim_wrapper_trains_on_cpu(cwd):
    """The reference configs name AmpOptimWrapper; without a GPU train.py uses bf16 autocast."""
    wd = str(cwd / 'amp_run')
    log = run(cwd, CONFIG, '--work-dir', wd, '--cfg-options', 'train_cfg.max_epochs=1',
              'optim_wrapper.type=AmpOptimWrapper', *FAST)
    assert 'CPUAmpOptimWrapper' in log
    assert ckpt(osp.join(wd, 'epoch_1.pth'))['meta']['iter'] == 2


def test_mmpretrain_training_entry_with_custom_imports(cwd):
    tool = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py')
    assert osp.isfile(tool)
    wd = str(cwd / 'mmpretrain_run')
    run(cwd, CONFIG, '--work-dir', wd, '--cfg-options', 'train_cfg.max_epochs=1',
        "custom_imports.imports=['densevlm_mm']", *FAST, tool=tool)
    assert ckpt(osp.join(wd, 'epoch_1.pth'))['meta']['iter'] == 2

