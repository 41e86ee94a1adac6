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


# ----------------------------------------------------------------- open_clip -> EVA-CLIP fork
def _reverse_cli():
    from conftest import load_tool
    return load_tool('model_converters/open_clip_to_eva_clip.py')


@pytest.mark.parametrize('name', ['densevlm-tiny-eva02', 'densevlm-tiny-eva02-teacher'])
def test_reverse_gives_the_vendored_layout_and_round_trips(name):
    from densevlm_mm.models.backbones.eva_converter import \
        convert_open_clip_to_eva_clip_state_dict
    torch.manual_seed(1)
    sd = create_clip(name)[0].state_dict()
    vendored, unmapped = convert_open_clip_to_eva_clip_state_dict(sd)
    assert unmapped == []
    expected = {k: v for k, v in to_vendored(sd).items() if 'rope' not in k}
    assert list(vendored) == list(expected)  # the fork's names, independently derived
    assert all(vendored[k] is sd_v for k, sd_v in zip(vendored, sd.values()))
    back, unmapped = convert_eva_clip_state_dict(vendored)
    assert unmapped == [] and list(back) == list(sd)
    assert all(back[k] is sd[k] for k in sd)


def test_reverse_round_trip_gives_equal_outputs(eva, tmp_path):
    from densevlm_mm.models.backbones.eva_converter import \
        convert_open_clip_to_eva_clip_state_dict
    vendored, _ = convert_open_clip_to_eva_clip_state_dict(eva.state_dict())
    torch.save({'state_dict': vendored}, tmp_path / 'fork.pt')
    torch.manual_seed(123)  # another random init, overwritten by the file
    model, tokenizer = create_clip('densevlm-tiny-eva02', pretrained=str(tmp_path / 'fork.pt'))
    model.eval()
    x = torch.randn(2, 3, 64, 96)
    text = tokenizer(['a photo of a cat', 'snow'])
    with torch.no_grad():
        square = x[..., :64]  # open_clip's own forward takes its configured 64x64 only
        assert torch.equal(model.encode_image(square), eva.encode_image(square))
        assert torch.equal(model.encode_text(text), eva.encode_text(text))
        dense = [DenseVLMBackbone.from_open_clip(m, freeze_unused=False).dense_features(x)
                 for m in (model, eva)]
    assert torch.equal(dense[0], dense[1])


def test_reverse_reports_what_the_fork_cannot_hold(eva):
    from densevlm_mm.models.backbones.eva_converter import \
        convert_open_clip_to_eva_clip_state_dict
    sd = dict(eva.state_dict())
    sd['visual.trunk.blocks.0.attn.k_proj.bias'] = torch.zeros(64)  # fork: k has no bias
    sd['visual.head.proj.weight'] = torch.zeros(2, 2)  # not a timm EVA trunk key
    new, unmapped = convert_open_clip_to_eva_clip_state_dict(sd)
    assert unmapped == ['visual.trunk.blocks.0.attn.k_proj.bias', 'visual.head.proj.weight']
    assert not any('k_bias' in k or 'head.proj' in k for k in new)


def test_reverse_cli_with_a_work_dir_checkpoint(tmp_path, eva, capsys):
    cli = _reverse_cli()
    sd = eva.state_dict()
    torch.save(sd, tmp_path / 'clip.pt')
    work = {f'backbone.{k}': v + 1 for k, v in sd.items() if k.startswith('visual.')}
    torch.save({'meta': {}, 'state_dict': work}, tmp_path / 'epoch_6.pth')
    out = tmp_path / 'fork.safetensors'
    assert cli.main([str(tmp_path / 'epoch_6.pth'), str(out), '--text-from',
                     str(tmp_path / 'clip.pt'), '--check-model', 'densevlm-tiny-eva02']) == 0
    assert 'loads strictly' in capsys.readouterr().out
    from safetensors.torch import load_file
    fork = load_file(out)
    assert torch.equal(fork['visual.blocks.0.attn.q_bias'],
                       sd['visual.trunk.blocks.0.attn.q_proj.bias'] + 1)  # the aligned tower
    assert torch.equal(fork['text.token_embedding.weight'], sd['text.token_embedding.weight'])
    # a vendored file as the text source works too; an image-only output is announced
    torch.save(to_vendored(sd), tmp_path / 'vendored.pt')
    assert cli.main([str(tmp_path / 'epoch_6.pth'), str(tmp_path / 'o.pt'), '--text-from',
                     str(tmp_path / 'vendored.pt')]) == 0
    assert cli.main([str(tmp_path / 'epoch_6.pth'), str(tmp_path / 'img.pt')]) == 0
    assert 'only the image tower' in capsys.readouterr().err
    bad = dict(sd)
    bad['visual.trunk.blocks.0.attn.k_proj.bias'] = torch.zeros(64)
    torch.save(bad, tmp_path / 'bad.pt')
    assert cli.main([str(tmp_path / 'bad.pt'), str(tmp_path / 'bad_out.pt')]) == 1
    assert 'unmapped: visual.trunk.blocks.0.attn.k_proj.bias' in capsys.readouterr().err
