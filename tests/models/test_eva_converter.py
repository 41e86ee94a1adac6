"""Vendored EVA-CLIP -> open_clip EVA02 key conversion (spec §9.2)."""
import re
import sys

import pytest
import torch

from densevlm_mm.models.backbones import DenseVLMBackbone, convert_eva_clip_state_dict
from densevlm_mm.models.clip_factory import create_clip

# inverse of the spec §9.2 table, written independently of the converter
INVERSE = [
    (r'\.attn\.q_proj\.bias$', '.attn.q_bias'),
    (r'\.attn\.v_proj\.bias$', '.attn.v_bias'),
    (r'\.attn\.norm\.', '.attn.inner_attn_ln.'),
    (r'\.mlp\.fc1_g\.', '.mlp.w1.'),
    (r'\.mlp\.fc1_x\.', '.mlp.w2.'),
    (r'\.mlp\.fc2\.', '.mlp.w3.'),
    (r'\.mlp\.norm\.', '.mlp.ffn_ln.'),
]


def to_vendored(sd):
    out = {}
    for k, v in sd.items():
        if k.startswith('visual.trunk.'):
            k = 'visual.' + k[len('visual.trunk.'):]
            for pat, repl in INVERSE:
                k = re.sub(pat, repl, k)
        out[k] = v
    depth = 1 + max(int(m.group(1)) for k in out for m in [re.match(r'visual\.blocks\.(\d+)', k)]
                    if m)
    out['visual.rope.freqs_cos'] = torch.randn(16, 32)
    out['visual.rope.freqs_sin'] = torch.randn(16, 32)
    for i in range(depth):
        out[f'visual.blocks.{i}.attn.rope.freqs_cos'] = out['visual.rope.freqs_cos']
    return out


@pytest.fixture(scope='module')
def eva():
    torch.manual_seed(0)
    return create_clip('densevlm-tiny-eva02')[0].eval()


def test_inverse_roundtrip_exact(eva):
    sd = eva.state_dict()
    vendored = to_vendored(sd)
    assert 'visual.blocks.0.attn.q_bias' in vendored and 'visual.blocks.1.mlp.w3.weight' in vendored
    assert 'text.token_embedding.weight' in vendored and 'logit_scale' in vendored
    new, unmapped = convert_eva_clip_state_dict(vendored)
    assert unmapped == []
    assert list(new) == list(sd)  # same keys, same order
    assert all(new[k] is sd[k] for k in sd)  # same tensors, untouched


def test_unmapped_reported(eva):
    vendored = to_vendored(eva.state_dict())
    vendored['visual.blocks.0.attn.relative_position_bias_table'] = torch.zeros(3)
    new, unmapped = convert_eva_clip_state_dict(vendored)
    assert unmapped == ['visual.blocks.0.attn.relative_position_bias_table']
    assert not any('relative_position' in k for k in new)


def test_create_clip_autoconverts_vendored_file(tmp_path, eva):
    vendored = {k: v.half() if v.is_floating_point() else v
                for k, v in to_vendored(eva.state_dict()).items()}  # fp16 like the release files
    torch.save({'module': {'module.' + k: v for k, v in vendored.items()}}, tmp_path / 'eva.pt')
    model, _ = create_clip('densevlm-tiny-eva02', pretrained=str(tmp_path / 'eva.pt'))
    ref = convert_eva_clip_state_dict(vendored)[0]
    got = model.state_dict()
    assert set(got) == set(ref)
    assert all(torch.equal(got[k], ref[k].to(got[k].dtype)) for k in ref)
    bb = DenseVLMBackbone('densevlm-tiny-eva02', pretrained=str(tmp_path / 'eva.pt'))
    assert bb.dense_features(torch.randn(1, 3, 48, 80)).shape == (1, 32, 3, 5)
    vendored['visual.blocks.0.attn.relative_position_bias_table'] = torch.zeros(3)
    torch.save(vendored, tmp_path / 'eva_extra.pt')
    with pytest.raises(RuntimeError, match='unexpected'):
        create_clip('densevlm-tiny-eva02', pretrained=str(tmp_path / 'eva_extra.pt'))


def test_cli(tmp_path, eva, monkeypatch, capsys):
    sys.path.insert(0, 'tools/model_converters')
    try:
        import eva_clip_to_open_clip as cli
    finally:
        sys.path.pop(0)
    torch.save(to_vendored(eva.state_dict()), tmp_path / 'in.pt')
    out = tmp_path / 'out.safetensors'
    monkeypatch.setattr(sys, 'argv', ['x', str(tmp_path / 'in.pt'), str(out),
                                      '--check-model', 'densevlm-tiny-eva02'])
    assert cli.main() == 0
    assert 'loads strictly' in capsys.readouterr().out
