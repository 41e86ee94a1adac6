"""tools/analysis/dump_configs.py: the resolved-config dump that proves a config restructure
changes nothing (dump before, restructure, compare)."""
import json

import pytest
from conftest import load_tool


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis/dump_configs.py')


def write_configs(root, lr='1e-4', size='(512, 512)'):
    (root / '_base_').mkdir(parents=True, exist_ok=True)
    (root / 'sub').mkdir(exist_ok=True)
    (root / '_base_' / 'schedule.py').write_text(
        f"optim_wrapper = dict(optimizer=dict(type='AdamW', lr={lr}, betas=(0.9, 0.98)))\n"
        "train_cfg = dict(max_iters=100)\n")
    (root / 'sub' / 'a.py').write_text(
        "_base_ = ['../_base_/schedule.py']\n"
        f"crop = {size}\nmodel = dict(type='M', layers=[1, 2])\n")
    (root / 'sub' / 'b.py').write_text("_base_ = ['./a.py']\ntrain_cfg = dict(max_iters=200)\n")


def test_dump_and_compare_find_exactly_what_changed(tool, tmp_path, capsys):
    configs, dump = tmp_path / 'configs', str(tmp_path / 'dump.json.gz')
    write_configs(configs)
    assert tool.main(['--configs', str(configs), '--out', dump]) == 0
    data = tool.read(dump)
    assert sorted(data['configs']) == ['sub/a.py', 'sub/b.py']        # _base_ files left out
    b = data['configs']['sub/b.py']
    assert '_base_' not in b and list(b) == sorted(b)
    assert b['train_cfg'] == {'max_iters': 200}
    assert b['optim_wrapper']['optimizer']['betas'] == {'__tuple__': [0.9, 0.98]}
    assert tool.main(['--configs', str(configs), '--compare', dump]) == 0
    assert 'all identical' in capsys.readouterr().out

    # a restructure that moves a value into a new base but keeps it: still identical
    (configs / '_base_' / 'crop.py').write_text('crop = (512, 512)\n')
    (configs / 'sub' / 'a.py').write_text(
        "_base_ = ['../_base_/schedule.py', '../_base_/crop.py']\n"
        "model = dict(type='M', layers=[1, 2])\n")
    assert tool.main(['--configs', str(configs), '--compare', dump]) == 0
    capsys.readouterr()

    # one value changed in a base: both children differ, at that key path
    write_configs(configs, lr='2e-4')
    assert tool.main(['--configs', str(configs), '--compare', dump]) == 1
    out = capsys.readouterr().out
    assert 'sub/a.py: optim_wrapper.optimizer.lr: 0.0001 -> 0.0002' in out
    assert 'sub/b.py: optim_wrapper.optimizer.lr: 0.0001 -> 0.0002' in out
    assert '2 differ' in out

    # a tuple that became a list, and a renamed config
    write_configs(configs, size='[512, 512]')
    (configs / 'sub' / 'b.py').rename(configs / 'sub' / 'c.py')
    assert tool.main(['--configs', str(configs), '--compare', dump]) == 1
    out = capsys.readouterr().out
    assert 'sub/a.py: crop: {"__tuple__": [512, 512]} -> [512, 512]' in out
    assert 'sub/b.py: the config is gone' in out and 'sub/c.py: a new config' in out


def test_differences_name_added_and_removed_keys(tool):
    old = {'a': {'x': 1, 'y': [1, 2]}, 'b': 2}
    new = {'a': {'x': 1, 'y': [1, 3], 'z': None}, 'c': 2}
    assert tool.differences(old, new) == ['a.y[1]: 2 -> 3', 'a.z: added (null)',
                                          'b: removed (was 2)', 'c: added (2)']
    assert tool.differences({'k': 1}, {'k': 1.0}) == ['k: 1 -> 1.0']
    assert tool.differences({'k': True}, {'k': 1}) == ['k: true -> 1']


def test_a_real_config_with_mmseg_bases_resolves(tool):
    data = tool.resolved(tool.ROOT / 'configs' / 'san' / 'san_tiny_demo.py')
    assert '_base_' not in data and data['default_scope'] == 'mmseg'
    assert not any(str(tool.ROOT) in line for line in json.dumps(data).splitlines())


def test_a_file_that_is_not_a_dump_is_refused(tool, tmp_path):
    path = tmp_path / 'x.json'
    path.write_text('{"configs": {}}')
    with pytest.raises(ValueError, match='not a config dump'):
        tool.read(str(path))
