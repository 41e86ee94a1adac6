"""OpenAI's CLIP releases (``ViT-B-16.pt``) are TorchScript archives: every loader and converter
reads them with open_clip's reader, drops the JIT scalar entries with one log line, and tells such
an archive, a truncated file and a file of another model apart.

The archives are made here the way OpenAI's files are laid out: a scripted module whose state dict
is the CLIP weights under OpenAI's names (``visual.*``, ``transformer.*``, ``token_embedding``,
``positional_embedding``, ``text_projection``, ``logit_scale``, ``ln_final``) plus the three
0-d tensors ``input_resolution``, ``context_length`` and ``vocab_size``. SAN's converter is compared
with mmseg's own ``tools/model_converters/clip2mmseg.py`` run on the same archive.
"""
import copy
import json
import os
import os.path as osp
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from densevlm_mm.models.clip_factory import BUNDLED_CONFIG_DIR, create_clip
from densevlm_mm.utils import checkpoint as ckpt_module
from densevlm_mm.utils.checkpoint import (JIT_SCALAR_KEYS, CheckpointError, is_torchscript_archive,
                                          load_checkpoint_file, read_checkpoint)

TINY = json.load(open(osp.join(BUNDLED_CONFIG_DIR, 'densevlm-tiny-vit.json')))
SCALARS = dict(input_resolution=64, context_length=77, vocab_size=49408)


class OpenAILayout(nn.Module):
    """CLIP weights under OpenAI's top-level names plus the JIT scalars, as in OpenAI's archives."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        for name in ('visual', 'transformer', 'token_embedding', 'ln_final'):
            setattr(self, name, getattr(clip, name))
        for name in ('positional_embedding', 'text_projection', 'logit_scale'):
            setattr(self, name, getattr(clip, name))
        for name, value in SCALARS.items():
            self.register_buffer(name, torch.tensor(value))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)


def make_archive(clip: nn.Module, path: str, half: bool = True) -> str:
    """``torch.jit.save`` of a scripted :class:`OpenAILayout` (fp16 weights, as OpenAI's)."""
    module = OpenAILayout(copy.deepcopy(clip)).eval()
    if half:
        module = module.half()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch.jit deprecation notices
        torch.jit.save(torch.jit.script(module), path)
    return path


def tiny_clip(layers: int = 3, seed: int = 0):
    cfg = copy.deepcopy(TINY)
    cfg['vision_cfg']['layers'] = layers
    cfg['quick_gelu'] = True  # OpenAI's activation
    torch.manual_seed(seed)
    clip, _ = create_clip('openai-layout-tiny', model_cfg=cfg)
    return clip.eval(), cfg


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    """A 3-block tiny CLIP (the bundled ``densevlm-tiny-vit`` sizes) as an OpenAI archive."""
    clip, cfg = tiny_clip()
    path = make_archive(clip, str(tmp_path_factory.mktemp('jit') / 'tiny_openai.pt'))
    return clip, cfg, path


@pytest.fixture()
def logs(monkeypatch):
    lines = []
    monkeypatch.setattr(ckpt_module, 'print_log', lambda msg, *a, **k: lines.append(str(msg)))
    return lines


def _half(state_dict):
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


# ------------------------------------------------------------------------------ reading
def test_archive_is_read_with_open_clips_reader(archive, logs, monkeypatch):
    clip, _, path = archive
    assert is_torchscript_archive(path)
    called = []
    import open_clip.factory
    real = open_clip.factory.load_state_dict
    monkeypatch.setattr(open_clip.factory, 'load_state_dict',
                        lambda *a, **k: called.append(a) or real(*a, **k))
    sd = load_checkpoint_file(path)
    assert called and called[0][0] == path  # open_clip's reader, not another one
    expected = _half(clip.state_dict())
    assert sorted(sd) == sorted(expected)  # the weights, no JIT scalar
    assert not set(JIT_SCALAR_KEYS) & set(sd)
    for k, v in expected.items():
        assert sd[k].dtype == v.dtype and torch.equal(sd[k], v), k
    assert len(logs) == 1 and 'TorchScript archive' in logs[0]
    assert all(k in logs[0] for k in JIT_SCALAR_KEYS)
    # read_checkpoint gives the same dict
    assert sorted(read_checkpoint(path)) == sorted(sd)


def test_torchscript_detection():
    assert not is_torchscript_archive(__file__)  # not a zip


def test_pretrained_and_create_clip_accept_the_archive(archive):
    """``create_clip(pretrained=...)`` and ``DenseVLMBackbone(pretrained=...)`` load it strictly:
    every weight is the archive's (fp16 values, as OpenAI's files, in the fp32 model)."""
    from densevlm_mm.models.backbones import DenseVLMBackbone
    clip, cfg, path = archive
    loaded, _ = create_clip('openai-layout-tiny', model_cfg=cfg, pretrained=path)
    expected = {k: v.float() for k, v in _half(clip.state_dict()).items()}
    assert sorted(loaded.state_dict()) == sorted(expected)
    for k, v in loaded.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, expected[k]), k
    backbone = DenseVLMBackbone('openai-layout-tiny', model_cfg=cfg, pretrained=path)
    for k, v in backbone.visual.state_dict().items():
        assert torch.equal(v, expected['visual.' + k]), k


def test_init_model_accepts_the_archive(tmp_path):
    """``apis.init_model(name, archive)``: both towers from the archive."""
    from densevlm_mm.apis import init_model
    torch.manual_seed(1)
    clip, _ = create_clip('densevlm-tiny-vit')
    path = make_archive(clip, str(tmp_path / 'ViT-tiny.pt'), half=False)
    model = init_model('densevlm-tiny-vit', path)
    for k, v in clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[k], v), k


def test_plain_openai_state_dict_drops_the_scalars_with_one_log_line(archive, tmp_path, logs):
    """A ``torch.save`` of the archive's state dict (scalars included) loads too."""
    clip, cfg, path = archive
    plain = str(tmp_path / 'plain.pt')
    torch.save(torch.jit.load(path).state_dict(), plain)
    assert set(JIT_SCALAR_KEYS) <= set(torch.load(plain, weights_only=True))
    logs.clear()
    sd = load_checkpoint_file(plain)
    assert not set(JIT_SCALAR_KEYS) & set(sd) and len(sd) == len(clip.state_dict())
    assert len(logs) == 1 and 'dropped the OpenAI JIT scalar entries' in logs[0]
    assert all(k in logs[0] for k in JIT_SCALAR_KEYS) and 'plain.pt' in logs[0]
    create_clip('openai-layout-tiny', model_cfg=cfg, pretrained=plain)  # strict
    # a tensor that only shares a name (not a one-element scalar) is kept
    odd = str(tmp_path / 'odd.pt')
    torch.save({'vocab_size': torch.zeros(3), 'w': torch.ones(1)}, odd)
    assert sorted(load_checkpoint_file(odd)) == ['vocab_size', 'w']


def test_cut_archive_and_other_model_messages_differ(archive, tmp_path, logs, capsys):
    """A TorchScript archive loads; a truncated one says truncated; a TorchScript archive of
    another model is read and then refused by the strict load with its key accounting; an archive
    without weights says so. No message is used for another case."""
    clip, cfg, path = archive
    data = open(path, 'rb').read()
    cut = str(tmp_path / 'cut.pt')
    with open(cut, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(CheckpointError) as truncated:
        create_clip('openai-layout-tiny', model_cfg=cfg, pretrained=cut)
    assert 'truncated or corrupt' in str(truncated.value) and 'cut.pt' in str(truncated.value)

    other = str(tmp_path / 'resnet_like.pt')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        torch.jit.save(torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())), other)
    logs.clear()
    with pytest.raises(CheckpointError) as wrong:
        create_clip('openai-layout-tiny', model_cfg=cfg, pretrained=other)
    msg = str(wrong.value)
    assert 'resnet_like.pt' in msg and 'missing keys' in msg and 'unexpected keys' in msg
    assert "'0.weight'" in msg and 'truncated or corrupt' not in msg
    assert any('TorchScript archive' in line for line in logs)  # it was read, as TorchScript
    from conftest import load_tool
    capsys.readouterr()
    tool = load_tool('model_converters/open_clip_to_san.py')
    assert tool.main([other, str(tmp_path / 'san.pth')]) == 1
    err = capsys.readouterr().err
    assert 'no image tower found' in err and 'truncated or corrupt' not in err
    assert tool.main([cut, str(tmp_path / 'san.pth')]) == 1
    assert 'truncated or corrupt' in capsys.readouterr().err

    empty = str(tmp_path / 'no_weights.pt')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        torch.jit.save(torch.jit.script(nn.ReLU()), empty)
    with pytest.raises(CheckpointError, match='TorchScript archive without any weights'):
        load_checkpoint_file(empty)

    broken = str(tmp_path / 'broken_pickle.pt')
    import zipfile
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(broken, 'w') as dst:
        for item in src.infolist():
            body = src.read(item)
            if item.filename.endswith('/data.pkl'):
                body = b'not a pickle'
            dst.writestr(item, body)
    with pytest.raises(CheckpointError, match='TorchScript archive .*torch.jit.load cannot read'):
        load_checkpoint_file(broken)
    # the good archive still loads
    create_clip('openai-layout-tiny', model_cfg=cfg, pretrained=path)


# --------------------------------------------------------------------------- converters
@pytest.fixture(scope='module')
def vit_b16_layout(tmp_path_factory):
    """A 12-block tiny CLIP (the block count of ViT-B/16) as ``tiny_ViT-B-16.pt``: mmseg's
    ``clip2mmseg.py`` picks SAN's split (9) from the ``B-16`` in the file name."""
    clip, cfg = tiny_clip(layers=12, seed=2)
    root = tmp_path_factory.mktemp('b16')
    return clip, cfg, make_archive(clip, str(root / 'tiny_ViT-B-16.pt'))


def test_san_converter_equals_mmsegs_clip2mmseg_on_the_archive(vit_b16_layout, tmp_path):
    """``open_clip_to_san.py ViT-B-16.pt`` writes what mmseg's ``clip2mmseg.py`` writes: the same
    keys, dtypes and values (mmseg's script run as is; on torch >= 2.6 its ``torch.load`` needs
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` to read a TorchScript archive at all)."""
    from conftest import load_tool
    import mmseg
    _, _, path = vit_b16_layout
    script = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'model_converters',
                      'clip2mmseg.py')
    theirs = str(tmp_path / 'mmseg.pth')
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    run = subprocess.run([sys.executable, script, path, theirs], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert all(f'pop parameter: {k}' in run.stdout for k in JIT_SCALAR_KEYS)  # mmseg drops them
    ours = str(tmp_path / 'ours.pth')
    tool = load_tool('model_converters/open_clip_to_san.py')
    assert tool.main([path, ours]) == 0
    a = torch.load(ours, weights_only=True)
    b = torch.load(theirs, weights_only=True)
    assert sorted(a) == sorted(b) and len(a) == 12 * 12 + 2 * 12 + 14
    for k in b:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k
    print(f'\nopen_clip_to_san.py vs mmseg clip2mmseg.py on a TorchScript archive: '
          f'{len(a)}/{len(b)} tensors bit-identical')


def test_every_converter_reads_the_archive(vit_b16_layout, tmp_path, monkeypatch, capsys):
    """Each tool of tools/model_converters/ reads the archive; CLIP-to-X tools convert it, tools
    for other model families report its keys as not theirs (never "truncated")."""
    from conftest import load_tool
    clip, cfg, path = vit_b16_layout
    expected = _half(clip.state_dict())
    # to_safe_checkpoint: the weights, without the JIT scalars
    out = str(tmp_path / 'safe.pt')
    monkeypatch.setattr(sys, 'argv', ['to_safe_checkpoint.py', path, out])
    load_tool('model_converters/to_safe_checkpoint.py').main()
    safe = torch.load(out, weights_only=True)
    assert sorted(safe) == sorted(expected)
    assert all(torch.equal(safe[k], v) for k, v in expected.items())
    # densevlm_to_open_clip: OpenAI's file as the base giving the text tower
    student = {'backbone.visual.' + k[len('visual.'):]: v.float() + 1
               for k, v in clip.state_dict().items() if k.startswith('visual.')}
    work = str(tmp_path / 'epoch_1.pth')
    torch.save(dict(state_dict=student, meta=dict(epoch=1)), work)
    register_tiny_config(cfg, monkeypatch)
    exported = str(tmp_path / 'exported.pt')
    tool = load_tool('model_converters/densevlm_to_open_clip.py')
    assert tool.main([work, '--base', path, '--model', 'openai-layout-tiny-b16',
                      '--out', exported]) == 0
    sd = torch.load(exported, weights_only=True)
    assert torch.equal(sd['token_embedding.weight'], expected['token_embedding.weight'].float())
    assert torch.equal(sd['visual.conv1.weight'], student['backbone.visual.conv1.weight'])
    # the EVA-CLIP converters: an OpenAI ViT is another model family; its keys are reported
    capsys.readouterr()
    monkeypatch.setattr(sys, 'argv', ['eva_clip_to_open_clip.py', path,
                                      str(tmp_path / 'eva.pt')])
    status = load_tool('model_converters/eva_clip_to_open_clip.py').main()
    err = capsys.readouterr()
    assert 'truncated or corrupt' not in err.err + err.out
    assert status == 1 and 'unmapped: visual.conv1.weight' in err.err
    tool = load_tool('model_converters/open_clip_to_eva_clip.py')
    status = tool.main([path, str(tmp_path / 'eva2.pt')])
    err = capsys.readouterr()
    assert status == 1 and 'unmapped: visual.conv1.weight' in err.err
    assert 'truncated or corrupt' not in err.err + err.out


def register_tiny_config(cfg, monkeypatch):
    """Make the 12-block tiny config a named open_clip model for the tools that take names."""
    import open_clip
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, 'openai-layout-tiny-b16',
                        copy.deepcopy(cfg))
