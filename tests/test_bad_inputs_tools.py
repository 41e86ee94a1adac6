"""Bad inputs of the command-line tools (issue 23): ``--cfg-options``, work dirs, checkpoints and
the converters. Each case ends in an error naming the input and the fix, or the right answer.

The tools run in this process (``conftest.load_tool``) on the toy config of
``tests/data/toy``; a second process is started only where one is the point (a lock held by a
process that is then killed).
"""
import importlib.util
import os
import os.path as osp
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from torch import nn

from conftest import load_tool

REPO = Path(__file__).resolve().parents[1]
TOY_DIR = REPO / 'tests' / 'data' / 'toy'
TOY_CONFIG = str(TOY_DIR / 'toy_config.py')


@pytest.fixture
def toy_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TOY_DIR))  # the toy config imports toy_modules
    monkeypatch.chdir(REPO)


# ---------------------------------------------------------------------------- --cfg-options
@pytest.mark.parametrize('option,match', [
    ('trian_cfg.max_epochs=1', r"--cfg-options trian_cfg\.max_epochs: the config has no key "
                               r"'trian_cfg'; did you mean 'train_cfg'\?"),
    ('train_cfg.max_epoch=1', r"train_cfg has no key 'max_epoch'; did you mean "
                              r'train_cfg\.max_epochs\?'),
    ('param_scheduler.3.end=2', r'param_scheduler is a list of 1 items; .3. is not an index'),
])
def test_cfg_options_keys_that_would_change_nothing_are_refused(toy_path, option, match):
    """mmengine merged such keys beside the real ones; the run went on with the config's value."""
    train = load_tool('train.py')
    with pytest.raises(SystemExit, match=match):
        train.main([TOY_CONFIG, '--work-dir', 'unused', '--cfg-options', option])


def test_cfg_options_variables_and_new_keys(toy_path):
    from densevlm_mm.utils.cfg_options import check_cfg_options, parse_cfg_options
    cfg = Config(dict(data_root='data/coco/', model=dict(type='M', backbone=dict(depth=2)),
                      train_dataloader=dict(dataset=dict(data_root='data/coco/', ann_file='a')),
                      val_dataloader=dict(dataset=dict(data_root='data/coco/'))))
    # a variable of the config file was copied when the file was read: setting it changes nothing
    with pytest.raises(ValueError, match=r"'data_root' is a variable of the config file.*its value "
                                         r'is in train_dataloader\.dataset\.data_root, '
                                         r'val_dataloader\.dataset\.data_root\).*e\.g\. '
                                         r'--cfg-options train_dataloader\.dataset\.data_root='):
        check_cfg_options(cfg, {'data_root': '/x'})
    # new arguments are allowed; Runner keys the config does not name too
    check_cfg_options(cfg, parse_cfg_options(['train_dataloader.dataset.indices=10',
                                              'model.backbone.frozen_stages=1', 'resume=True',
                                              'load_strict=False']))
    with pytest.raises(ValueError, match=r"model\.backbone has no key 'dept'; did you mean "
                                         r'model\.backbone\.depth\?'):
        check_cfg_options(cfg, {'model.backbone.dept': 3})


def test_cfg_options_values_keep_their_spaces(toy_path, tmp_path):
    """mmengine's DictAction turned 'load_from=/my dir/x.pth' into '/mydir/x.pth'."""
    from densevlm_mm.utils.cfg_options import parse_cfg_options
    opts = parse_cfg_options(['load_from=/my data/x.pth', 'a=[1, 2]', "b='x y'", 'c=3', 'd=a,b',
                              'e=None', 'f=true'])
    assert opts == {'load_from': '/my data/x.pth', 'a': [1, 2], 'b': 'x y', 'c': 3,
                    'd': ['a', 'b'], 'e': None, 'f': True}
    with pytest.raises(ValueError, match=r"a list element holds a space.*config file that "
                                         r"inherits yours \(_base_ = \['your_config\.py'\]; "
                                         r'paths = \[\.\.\.\]\)'):
        parse_cfg_options(['x.paths=[/my data/a, /b]'])
    train = load_tool('train.py')
    with pytest.raises(SystemExit, match=r"'dir/x\.pth' is not KEY=VALUE\. When a value holds a "
                                         r'space, the shell splits it.*--cfg-options '
                                         r"'data_root=/my data/coco'"):
        train.main([TOY_CONFIG, '--cfg-options', 'load_from=/my', 'dir/x.pth'])
    missing = tmp_path / 'my dir' / 'x.pth'
    with pytest.raises(SystemExit, match=f'load_from checkpoint file not found: {missing}$'):
        train.main([TOY_CONFIG, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                    f'load_from={missing}'])
    test = load_tool('test.py')
    ckpt = tmp_path / 'c.pth'
    ckpt.write_bytes(b'never read')
    with pytest.raises(SystemExit, match="the config has no key 'test_dataloder'; did you mean "
                                         "'test_dataloader'"):
        test.main([TOY_CONFIG, str(ckpt), '--cfg-options', 'test_dataloder.batch_size=1'])


# ---------------------------------------------------------------------------- work dirs
def _lock_module():
    """work_dir_lock.py by path: a child process holds the lock without importing torch."""
    path = REPO / 'densevlm_mm' / 'engine' / 'work_dir_lock.py'
    spec = importlib.util.spec_from_file_location('work_dir_lock_under_test', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def test_a_work_dir_is_held_by_one_training_and_freed_by_a_crash(toy_path, tmp_path):
    """Two trainings in one work dir mixed their checkpoints; a killed run must not keep it."""
    lock, path = _lock_module()
    work_dir = str(tmp_path / 'w')
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import importlib.util, sys, time; '
         f's = importlib.util.spec_from_file_location("m", {str(path)!r}); '
         'm = importlib.util.module_from_spec(s); s.loader.exec_module(m); '
         f'c = m.hold_work_dir({work_dir!r}); c.__enter__(); print("held", flush=True); '
         'time.sleep(120)'], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        train = load_tool('train.py')
        args = [TOY_CONFIG, '--work-dir', work_dir, '--cfg-options', 'train_cfg.max_epochs=1']
        with pytest.raises(SystemExit, match=rf"the work dir '{work_dir}' is in use by a training "
                                             rf'that is still running \(pid {holder.pid} on '
                                             r'.*Give this run another --work-dir'):
            train.main(args)
        # other ranks of a distributed run do not take it
        os.environ['RANK'] = '1'
        try:
            with lock.hold_work_dir(work_dir, 'pytorch') as held:
                assert held is None
        finally:
            del os.environ['RANK']
        holder.send_signal(signal.SIGKILL)  # a crash: no clean-up code runs
        holder.wait(timeout=30)
        train.main(args)  # the kernel released the lock with the process
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.stdout.close()
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    assert open(osp.join(work_dir, lock.LOCK_FILE)).read() == ''  # released at the end
    # in one process too: a second holder is refused while the first holds
    with lock.hold_work_dir(work_dir) as first:
        assert f'pid {os.getpid()} on ' in open(first).read()
        with pytest.raises(lock.WorkDirInUseError, match=f'pid {os.getpid()} on '):
            with lock.hold_work_dir(work_dir):
                pass


# ---------------------------------------------------------------------------- checkpoints
class _Two(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.a = nn.Linear(3, width)
        self.b = nn.Linear(width, 2)


def test_checkpoint_of_other_shapes_names_keys_and_shapes(tmp_path):
    """load_state_dict raised torch's bare 'size mismatch' (no file, no fix) from the tools."""
    from densevlm_mm.utils.checkpoint import CheckpointError, load_weights_strictly
    wide = _Two(width=5)
    torch.save(dict(state_dict=wide.state_dict()), tmp_path / 'wide.pth')
    with pytest.raises(CheckpointError) as err:
        load_weights_strictly(_Two(), str(tmp_path / 'wide.pth'))
    msg = str(err.value)
    assert f"checkpoint '{tmp_path / 'wide.pth'}' does not match _Two: 3 (first: " in msg
    assert "['a.weight: [5, 3] in the checkpoint vs [4, 3] in the model'" in msg
    assert 'tensors of another shape' in msg and '--no-strict' in msg
    model = _Two()
    before = model.a.weight.clone()
    got = load_weights_strictly(model, str(tmp_path / 'wide.pth'), strict=False)
    assert got['missing'] == [] and got['unexpected'] == [] and len(got['shape_mismatch']) == 3
    assert torch.equal(model.a.weight, before)  # not loaded
    assert torch.equal(model.b.bias, wide.b.bias)  # the tensor of the same shape is loaded
    # every failure of the tools' loading is one CheckpointError naming the file
    with pytest.raises(CheckpointError, match=r"checkpoint file not found: '.*nothere\.pth'"):
        load_weights_strictly(_Two(), str(tmp_path / 'nothere.pth'))


def test_fvit_converter_refuses_what_is_not_an_mmdet2_fvit(tmp_path, capsys):
    """An image-tower checkpoint converted with '0 unmapped' into a 'detector' file."""
    tool = load_tool('model_converters/fvit_mmdet2_to_mmdet3.py')
    tower = {'backbone.visual.trunk.blocks.0.norm1.weight': torch.ones(4),
             'backbone.visual.trunk.pos_embed': torch.zeros(1, 5, 4)}
    src, dst = tmp_path / 'tower.pth', tmp_path / 'out.pth'
    torch.save(dict(state_dict=tower), src)
    assert tool.main([str(src), str(dst)]) == 1
    err = capsys.readouterr().err
    assert f"'{src}' is not an F-ViT checkpoint: none of its 2 keys belongs to an rpn_head or " \
           'roi_head (2 are image-tower keys)' in err and 'nothing written' in err
    assert not dst.exists()
    converted = dict(tower, **{'neck.0.upsample_4x.0.weight': torch.ones(1),
                               'rpn_head.rpn_conv.weight': torch.ones(1)})
    torch.save(converted, src)
    assert tool.main([str(src), str(dst)]) == 1
    assert "is already in this package's mmdet 3.x layout" in capsys.readouterr().err
    assert not dst.exists()


def test_clip_converters_check_the_model_before_writing(tmp_path, capsys):
    """--check-model used to fail with a raw size mismatch after the output was written."""
    from densevlm_mm.models.backbones.eva_converter import convert_open_clip_to_eva_clip_state_dict
    from densevlm_mm.models.clip_factory import create_clip
    torch.manual_seed(0)
    vendored, _ = convert_open_clip_to_eva_clip_state_dict(
        create_clip('densevlm-tiny-eva02')[0].state_dict())
    src, dst = tmp_path / 'eva.pt', tmp_path / 'out.pt'
    torch.save(vendored, src)
    tool = load_tool('model_converters/eva_clip_to_open_clip.py')
    argv = sys.argv
    try:
        sys.argv = ['x', str(src), str(dst), '--check-model', 'densevlm-tiny-eva02-teacher']
        assert tool.main() == 1
    finally:
        sys.argv = argv
    err = capsys.readouterr().err
    assert not dst.exists() and f'nothing written to {dst}' in err
    assert f"loading weights into CustomTextCLIP from '{src}'" in err
    assert 'tensors of another shape' in err and ' in the checkpoint vs ' in err
    reverse = load_tool('model_converters/open_clip_to_eva_clip.py')
    torch.save(create_clip('densevlm-tiny-eva02')[0].state_dict(), tmp_path / 'clip.pt')
    assert reverse.main([str(tmp_path / 'clip.pt'), str(dst), '--check-model',
                         'densevlm-tiny-eva02-teacher']) == 1
    assert not dst.exists() and 'nothing written' in capsys.readouterr().err


def test_san_converter_checks_the_config_before_writing(tmp_path, capsys):
    """``--config`` reported its key / shape mismatches after DST was written."""
    from densevlm_mm.models.clip_factory import create_clip
    src, dst = tmp_path / 'clip.pt', tmp_path / 'san.pth'
    torch.save(create_clip('densevlm-tiny-vit')[0].state_dict(), src)
    tool = load_tool('model_converters/open_clip_to_san.py')
    config = str(REPO / 'configs' / 'san' / 'san_tiny_demo.py')
    assert tool.main([str(src), str(dst), '--split', '1', '--config', config]) == 1
    err = capsys.readouterr().err
    assert f"the conversion of '{src}' does not fit the model of {config} (listed above); nothing " \
           f'written to {dst}' in err and 'missing: ' in err
    assert not dst.exists()
    assert tool.main([str(src), str(dst), '--split', '2', '--config', config]) == 0
    assert dst.exists()
