"""Checkpoints load anywhere: read_checkpoint errors, work-dir / CLIPSelf / EVA-CLIP / open_clip
files into DenseVLMBackbone (pretrained= and init_cfg), strict key accounting, and
load_model_checkpoint for whole models."""
import copy
import re

import pytest
import torch
from torch import nn

from densevlm_mm.models.backbones import DenseVLMBackbone
from densevlm_mm.models.clip_factory import create_clip
from densevlm_mm.utils.checkpoint import (CheckpointError, load_checkpoint_file,
                                          load_model_checkpoint, read_checkpoint)


@pytest.fixture(scope='module')
def eva_clip():
    torch.manual_seed(3)
    clip, _ = create_clip('densevlm-tiny-eva02')
    with torch.no_grad():
        for p in clip.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return clip.eval()


def _mmengine_ckpt(backbone_sd, extra=None):
    """What a DenseVLM / CLIPSelf / RegionCLIP work dir's epoch_N.pth holds."""
    sd = {'backbone.' + k: v for k, v in backbone_sd.items()}
    sd.update(extra or {'head.loss.tau': torch.tensor(0.01)})
    return {'meta': {'epoch': 6, 'iter': 60, 'mmengine_version': '0.10.7', 'seed': 0,
                     'dataset_meta': {'classes': ['cat']}},
            'state_dict': sd, 'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-5}]}}


_INVERSE = [(r'^visual\.trunk\.', 'visual.'), (r'\.attn\.q_proj\.bias$', '.attn.q_bias'),
            (r'\.attn\.v_proj\.bias$', '.attn.v_bias'), (r'\.attn\.norm\.', '.attn.inner_attn_ln.'),
            (r'\.mlp\.fc1_g\.', '.mlp.w1.'), (r'\.mlp\.fc1_x\.', '.mlp.w2.'),
            (r'\.mlp\.fc2\.', '.mlp.w3.'), (r'\.mlp\.norm\.', '.mlp.ffn_ln.')]


def _to_vendored(sd):
    """open_clip EVA02 keys -> the EVA-CLIP fork's (spec §9.2 table), plus its RoPE buffers."""
    out = {}
    for k, v in sd.items():
        if k.startswith('visual.trunk.'):
            for pat, repl in _INVERSE:
                k = re.sub(pat, repl, k)
        out[k] = v
    out['visual.rope.freqs_cos'] = torch.randn(16, 32)
    for i in range(3):
        out[f'visual.blocks.{i}.attn.rope.freqs_cos'] = out['visual.rope.freqs_cos']
    return out


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


# --------------------------------------------------------------------------- read_checkpoint
def test_read_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        read_checkpoint(str(tmp_path / 'nope.pth'))
    with pytest.raises(IsADirectoryError, match='is a directory'):
        read_checkpoint(str(tmp_path))
    jpeg = tmp_path / 'photo.pth'
    jpeg.write_bytes(b'\xff\xd8\xff\xe0\x00\x10JFIF\x00' + bytes(200))
    with pytest.raises(CheckpointError, match=r"photo\.pth.*JPEG image, not a model checkpoint"):
        read_checkpoint(str(jpeg))
    (tmp_path / 'empty.pt').write_bytes(b'')
    with pytest.raises(CheckpointError, match=r'empty\.pt.*empty'):
        read_checkpoint(str(tmp_path / 'empty.pt'))
    torch.save({'w': torch.randn(64, 64)}, tmp_path / 'full.pth')
    data = (tmp_path / 'full.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=r'cut\.pth.*truncated'):
        read_checkpoint(str(tmp_path / 'cut.pth'))
    torch.save([torch.zeros(1)], tmp_path / 'list.pt')
    with pytest.raises(CheckpointError, match=r'list\.pt.*not a dict'):
        read_checkpoint(str(tmp_path / 'list.pt'))


def test_read_checkpoint_safetensors_any_extension_and_weights_only(tmp_path):
    import argparse

    from safetensors.torch import save_file
    sd = {'a': torch.arange(3.0), 'b.c': torch.ones(2, 2)}
    save_file(sd, tmp_path / 'weights.bin')  # safetensors content, other extension
    got = read_checkpoint(str(tmp_path / 'weights.bin'))
    assert set(got) == {'a', 'b.c'} and torch.equal(got['a'], sd['a'])
    torch.save({'state_dict': sd, 'args': argparse.Namespace(lr=1)}, tmp_path / 'pickled.pt')
    with pytest.raises(CheckpointError,
                       match=r'(?s)pickled\.pt.*weights_only.*argparse.*to_safe_checkpoint'):
        read_checkpoint(str(tmp_path / 'pickled.pt'))
    # mmengine's meta (message hub HistoryBuffers with numpy) is readable
    from mmengine.logging import HistoryBuffer
    hub = {'log_scalars': {'train/loss': HistoryBuffer()}}
    hub['log_scalars']['train/loss'].update(0.5)
    torch.save({'state_dict': sd, 'message_hub': hub}, tmp_path / 'mm.pth')
    assert set(load_checkpoint_file(str(tmp_path / 'mm.pth'))) == {'a', 'b.c'}


# ------------------------------------------------------------------ backbone pretrained / init
def test_work_dir_checkpoint_into_backbone(tmp_path, eva_clip):
    aligned = DenseVLMBackbone.from_open_clip(copy.deepcopy(eva_clip),
                                              model_name='densevlm-tiny-eva02')
    path = tmp_path / 'epoch_6.pth'
    torch.save(_mmengine_ckpt(aligned.state_dict()), path)
    by_arg = DenseVLMBackbone('densevlm-tiny-eva02', pretrained=str(path))
    _same_weights(by_arg, aligned)
    by_init = DenseVLMBackbone('densevlm-tiny-eva02',
                               init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    by_init.init_weights()
    _same_weights(by_init, aligned)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(by_arg.eval().dense_features(x),
                                   aligned.eval().dense_features(x))
    with pytest.raises(ValueError, match='not both'):
        DenseVLMBackbone('densevlm-tiny-eva02', pretrained=str(path),
                         init_cfg=dict(type='Pretrained', checkpoint=str(path)))


def test_mmengine_runner_checkpoint_of_a_model_with_backbone(tmp_path, eva_clip):
    """A checkpoint written by mmengine's own save_checkpoint of a model holding the backbone."""
    from mmengine.runner.checkpoint import save_checkpoint

    class Detector(nn.Module):
        def __init__(self, clip):
            super().__init__()
            self.backbone = DenseVLMBackbone.from_open_clip(clip, model_name='x')
            self.neck = nn.Linear(4, 4)

    det = Detector(copy.deepcopy(eva_clip))
    save_checkpoint({'state_dict': det.state_dict(), 'meta': {'epoch': 1}},
                    str(tmp_path / 'det.pth'))
    bb = DenseVLMBackbone('densevlm-tiny-eva02', pretrained=str(tmp_path / 'det.pth'))
    _same_weights(bb, det.backbone)


def test_clipself_vendored_training_output(tmp_path, eva_clip):
    """CLIPSelf/DenseVLM reference epoch_N.pt: vendored EVA names + text + RoPE duplicates."""
    vendored = _to_vendored(eva_clip.state_dict())
    torch.save({'epoch': 6, 'name': 'run', 'state_dict': vendored}, tmp_path / 'epoch_6.pt')
    bb = DenseVLMBackbone('densevlm-tiny-eva02', pretrained=str(tmp_path / 'epoch_6.pt'))
    _same_weights(bb, DenseVLMBackbone.from_open_clip(copy.deepcopy(eva_clip)))


def test_open_clip_full_and_visual_only_files(tmp_path, eva_clip):
    torch.save(eva_clip.state_dict(), tmp_path / 'clip.pt')
    ref = DenseVLMBackbone.from_open_clip(copy.deepcopy(eva_clip))
    _same_weights(DenseVLMBackbone('densevlm-tiny-eva02', pretrained=str(tmp_path / 'clip.pt')),
                  ref)
    torch.save(eva_clip.visual.state_dict(), tmp_path / 'bare.pt')  # no `visual.` prefix
    _same_weights(DenseVLMBackbone('densevlm-tiny-eva02', pretrained=str(tmp_path / 'bare.pt')),
                  ref)


def test_other_model_raises_with_key_accounting(tmp_path, eva_clip):
    vit, _ = create_clip('densevlm-tiny-vit')
    bb = DenseVLMBackbone.from_open_clip(vit)
    path = tmp_path / 'vit_run.pth'
    torch.save(_mmengine_ckpt(bb.state_dict()), path)
    with pytest.raises(CheckpointError) as err:
        DenseVLMBackbone('densevlm-tiny-eva02', pretrained=str(path))
    msg = str(err.value)
    assert 'vit_run.pth' in msg and "'densevlm-tiny-eva02'" in msg and 'backbone.visual.*' in msg
    n_missing = len(DenseVLMBackbone('densevlm-tiny-eva02').visual.state_dict())
    assert re.search(rf'{n_missing} \(first: \[.*\]\) missing keys', msg)
    assert re.search(r'\d+ \(first: \[.*conv1.*\]\) unexpected keys', msg)
    assert 'Fix: pass the model_name' in msg
    # a file that is not a checkpoint names the file
    (tmp_path / 'img.pt').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(64))
    with pytest.raises(CheckpointError, match=r'img\.pt.*PNG'):
        DenseVLMBackbone('densevlm-tiny-eva02', pretrained=str(tmp_path / 'img.pt'))
    with pytest.raises(IsADirectoryError, match='is a directory'):
        DenseVLMBackbone('densevlm-tiny-eva02', pretrained=str(tmp_path))
    with pytest.raises(ValueError, match='known open_clip pretrained tag.*never downloads'):
        DenseVLMBackbone('EVA02-B-16', pretrained='merged2b_s8b_b131k')
    # an explicit prefix that matches nothing
    with pytest.raises(CheckpointError, match="no keys starting with 'student.visual.'"):
        DenseVLMBackbone('densevlm-tiny-vit', init_cfg=dict(
            type='Pretrained', checkpoint=str(path), prefix='student.')).init_weights()


# ------------------------------------------------------------------------ whole-model loading
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)


def test_load_model_checkpoint(tmp_path):
    torch.manual_seed(0)
    src = _Tiny()
    torch.save({'meta': {'epoch': 1}, 'state_dict': src.state_dict()}, tmp_path / 'epoch_1.pth')
    dst = _Tiny()
    assert load_model_checkpoint(dst, str(tmp_path / 'epoch_1.pth')) == dict(missing=[],
                                                                            unexpected=[])
    _same_weights(dst, src)
    # DDP-style wrapper with .module and a `module.` prefixed file
    torch.save({'state_dict': {'module.' + k: v for k, v in src.state_dict().items()}},
               tmp_path / 'ddp.pth')
    wrapper = nn.Module()
    wrapper.module = _Tiny()
    load_model_checkpoint(wrapper, str(tmp_path / 'ddp.pth'))
    _same_weights(wrapper.module, src)
    # mismatch: strict raises with accounting, non-strict returns it
    sd = dict(src.state_dict(), **{'roi_head.fc.weight': torch.zeros(1)})
    del sd['head.bias']
    torch.save({'state_dict': sd}, tmp_path / 'other.pth')
    with pytest.raises(CheckpointError) as err:
        load_model_checkpoint(_Tiny(), str(tmp_path / 'other.pth'))
    msg = str(err.value)
    assert "other.pth" in msg and '_Tiny' in msg and "1 (first: ['head.bias']) missing" in msg
    assert "1 (first: ['roi_head.fc.weight']) unexpected" in msg and '--no-strict' in msg
    got = load_model_checkpoint(_Tiny(), str(tmp_path / 'other.pth'), strict=False)
    assert got == dict(missing=['head.bias'], unexpected=['roi_head.fc.weight'])
    # prefix_map renames and drops
    ren = {'student.' + k[len('backbone.'):] if k.startswith('backbone.') else k: v
           for k, v in sd.items()}
    torch.save({'state_dict': ren}, tmp_path / 'renamed.pth')
    got = load_model_checkpoint(_Tiny(), str(tmp_path / 'renamed.pth'), strict=False,
                                prefix_map={'student.': 'backbone.', 'roi_head.': None})
    assert got == dict(missing=['head.bias'], unexpected=[])
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_model_checkpoint(_Tiny(), str(tmp_path / 'missing.pth'))
