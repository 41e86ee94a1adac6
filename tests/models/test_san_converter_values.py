"""open_clip -> SAN converter: key mapping round trips (spec §11.1).

The expected SAN name of every open_clip key is derived here from the table of mmseg's
``clip2mmseg.py`` (image blocks below the split -> ``image_encoder.layers.i`` with ``ln1 /
attn.attn / ln2 / ffn.layers.0.0 / ffn.layers.1``; the others -> the head's
``rec_with_attnbias.layers.(i - split)`` and the text blocks -> ``text_encoder.transformer.i``, both
with ``norms.0 / attentions.0.attn / norms.1 / ffns.0.layers.0.0 / ffns.0.layers.1``), then mapped
back, so that every tensor must come back unchanged under its own name.
"""
import pytest
import torch

from densevlm_mm.models.segmentors.san_converter import (IGNORED_SOURCE_KEYS, SAN_CLIP_PREFIXES,
                                                         SAN_OWN_KEYS, check_san_keys,
                                                         convert_open_clip_to_san,
                                                         num_visual_layers,
                                                         open_clip_state_dict_from_checkpoint)

IMAGE_PARTS = {'ln_1': 'ln1', 'attn': 'attn.attn', 'ln_2': 'ln2', 'mlp.c_fc': 'ffn.layers.0.0',
               'mlp.c_proj': 'ffn.layers.1'}
TRANSFORMER_PARTS = {'ln_1': 'norms.0', 'attn': 'attentions.0.attn', 'ln_2': 'norms.1',
                     'mlp.c_fc': 'ffns.0.layers.0.0', 'mlp.c_proj': 'ffns.0.layers.1'}
REC = 'decode_head.rec_with_attnbias.'
BLOCK_PARAMS = ['ln_1.weight', 'ln_1.bias', 'attn.in_proj_weight', 'attn.in_proj_bias',
                'attn.out_proj.weight', 'attn.out_proj.bias', 'ln_2.weight', 'ln_2.bias',
                'mlp.c_fc.weight', 'mlp.c_fc.bias', 'mlp.c_proj.weight', 'mlp.c_proj.bias']


def _fake_clip(depth: int = 4, text_depth: int = 2, width: int = 6, seed: int = 0):
    """An open_clip-shaped state dict with distinct random tensors (small sizes)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {'visual.class_embedding': r(width), 'visual.positional_embedding': r(5, width),
          'visual.proj': r(width, 4), 'visual.conv1.weight': r(width, 3, 2, 2),
          'visual.ln_pre.weight': r(width), 'visual.ln_pre.bias': r(width),
          'visual.ln_post.weight': r(width), 'visual.ln_post.bias': r(width),
          'token_embedding.weight': r(10, 4), 'positional_embedding': r(7, 4),
          'text_projection': r(4, 4), 'logit_scale': r(()), 'ln_final.weight': r(4),
          'ln_final.bias': r(4)}
    for i in range(depth):
        for p in BLOCK_PARAMS:
            sd[f'visual.transformer.resblocks.{i}.{p}'] = r(3)
    for i in range(text_depth):
        for p in BLOCK_PARAMS:
            sd[f'transformer.resblocks.{i}.{p}'] = r(2)
    return sd


def _expected_name(key: str, split: int):
    """The SAN name of an open_clip key, from the mapping table (None: not a CLIP weight)."""
    simple = {'visual.class_embedding': 'image_encoder.cls_token',
              'visual.positional_embedding': 'image_encoder.pos_embed',
              'visual.conv1.weight': 'image_encoder.patch_embed.projection.weight',
              'visual.ln_pre.weight': 'image_encoder.ln_pre.weight',
              'visual.ln_pre.bias': 'image_encoder.ln_pre.bias',
              'visual.ln_post.weight': REC + 'ln_post.weight',
              'visual.ln_post.bias': REC + 'ln_post.bias', 'visual.proj': REC + 'proj.weight'}
    if key in simple:
        return simple[key]
    for top in ('token_embedding.weight', 'positional_embedding', 'text_projection',
                'logit_scale', 'ln_final.weight', 'ln_final.bias'):
        if key == top:
            return 'text_encoder.' + key
    parts = key.split('.')
    if key.startswith('visual.transformer.resblocks.'):
        i, rest = int(parts[3]), '.'.join(parts[4:])
        table, prefix = ((IMAGE_PARTS, f'image_encoder.layers.{i}.') if i < split else
                         (TRANSFORMER_PARTS, f'{REC}layers.{i - split}.'))
    elif key.startswith('transformer.resblocks.'):
        i, rest = int(parts[2]), '.'.join(parts[3:])
        table, prefix = TRANSFORMER_PARTS, f'text_encoder.transformer.{i}.'
    else:
        return None
    for src, dst in table.items():
        if rest.startswith(src + '.'):
            return prefix + dst + rest[len(src):]
    return None


def _back(value: torch.Tensor, san_key: str) -> torch.Tensor:
    """Undo the layout changes (cls token [1, 1, C], pos embed [1, L, C], proj transposed)."""
    if san_key == 'image_encoder.cls_token':
        return value.reshape(-1)
    if san_key == 'image_encoder.pos_embed':
        return value[0]
    if san_key == REC + 'proj.weight':
        return value.t()
    return value


@pytest.mark.parametrize('split', [1, 2, 3])
def test_every_key_round_trips_through_the_table(split):
    sd = _fake_clip(depth=4)
    converted, unmapped = convert_open_clip_to_san(sd, visual_split=split)
    assert unmapped == []
    names = {k: _expected_name(k, split) for k in sd}
    assert sorted(converted) == sorted(names.values())
    for key, value in sd.items():
        new = names[key]
        assert torch.equal(_back(converted[new], new), value), key
    assert converted['image_encoder.cls_token'].shape == (1, 1, 6)
    assert converted['image_encoder.pos_embed'].shape == (1, 5, 6)
    assert converted[REC + 'proj.weight'].shape == (4, 6)
    assert converted[REC + 'proj.weight'].is_contiguous()
    # the split: `split` blocks in the image encoder, the rest in the head, renumbered from 0
    enc = {int(k.split('.')[2]) for k in converted if k.startswith('image_encoder.layers.')}
    rec = {int(k.split('.')[3]) for k in converted if k.startswith(REC + 'layers.')}
    assert enc == set(range(split)) and rec == set(range(4 - split))


def test_real_tiny_clip_round_trips():
    """The same on a real open_clip model's state dict (every key accounted for)."""
    from densevlm_mm.models.clip_factory import create_clip
    torch.manual_seed(0)
    model, _ = create_clip('densevlm-tiny-vit')
    sd = model.state_dict()
    converted, unmapped = convert_open_clip_to_san(sd, visual_split=2)
    assert unmapped == []
    assert len(converted) == len(sd)
    for key, value in sd.items():
        new = _expected_name(key, 2)
        assert new is not None, key
        assert torch.equal(_back(converted[new], new), value), key


def test_text_tower_can_be_left_out():
    sd = _fake_clip()
    converted, unmapped = convert_open_clip_to_san(sd, visual_split=2, include_text=False)
    text = sorted(k for k in sd if not k.startswith('visual.'))
    assert sorted(unmapped) == text
    assert not any(k.startswith('text_encoder.') for k in converted)
    assert len(converted) == len(sd) - len(text)
    assert convert_open_clip_to_san(sd, 2)[1] == []  # included by default


def test_unknown_and_ignored_keys():
    """Foreign keys are reported in order, never dropped; the attention-mask buffers are
    skipped."""
    sd = _fake_clip(depth=3)
    extra = {'visual.transformer.resblocks.0.ls_1.gamma': torch.zeros(1),  # image encoder part
             'visual.transformer.resblocks.2.ls_2.gamma': torch.zeros(1),  # head part
             'transformer.resblocks.1.ls_1.gamma': torch.zeros(1),  # text
             'visual.head.weight': torch.zeros(1), 'text.other': torch.zeros(1)}
    ignored = {k: torch.zeros(1) for k in IGNORED_SOURCE_KEYS}
    assert set(IGNORED_SOURCE_KEYS) == {'attn_mask', 'visual.attn_mask'}
    converted, unmapped = convert_open_clip_to_san({**sd, **ignored, **extra}, visual_split=2)
    assert unmapped == list(extra)
    assert len(converted) == len(sd)


@pytest.mark.parametrize('split,ok', [(0, False), (1, True), (3, True), (4, False), (-1, False)])
def test_split_must_leave_blocks_on_both_sides(split, ok):
    sd = _fake_clip(depth=4)
    if ok:
        convert_open_clip_to_san(sd, visual_split=split)
    else:
        with pytest.raises(ValueError, match=rf'visual_split={split} must be in 1\.\.3 for a '
                                             r'4-block image tower'):
            convert_open_clip_to_san(sd, visual_split=split)


def test_non_vit_towers_are_refused():
    sd = _fake_clip()
    no_conv = {k: v for k, v in sd.items() if k != 'visual.conv1.weight'}
    with pytest.raises(ValueError, match='no OpenAI-style ViT image tower'):
        convert_open_clip_to_san(no_conv, visual_split=2)
    no_blocks = {k: v for k, v in sd.items() if 'visual.transformer' not in k}
    with pytest.raises(ValueError, match='no OpenAI-style ViT image tower'):
        convert_open_clip_to_san(no_blocks, visual_split=1)


def test_num_visual_layers():
    assert num_visual_layers(_fake_clip(depth=3)) == 3
    assert num_visual_layers({'visual.transformer.resblocks.11.ln_1.weight': 0,
                              'visual.transformer.resblocks.2.ln_1.weight': 0}) == 12
    assert num_visual_layers({'transformer.resblocks.5.ln_1.weight': 0}) == 0  # text only
    assert num_visual_layers({}) == 0


def test_check_san_keys_reports_sorted_differences():
    assert SAN_CLIP_PREFIXES == ('image_encoder.', 'decode_head.rec_with_attnbias.',
                                 'text_encoder.')
    assert SAN_OWN_KEYS == ('text_encoder.bg_embed', 'decode_head.rec_with_attnbias.sos_token')
    model = {'image_encoder.b': torch.zeros(2), 'image_encoder.a': torch.zeros(2),
             REC + 'layers.0.x': torch.zeros(3), REC + 'sos_token': torch.zeros(1),
             'text_encoder.bg_embed': torch.zeros(1), 'text_encoder.z': torch.zeros(1),
             'text_encoder.y': torch.zeros(1), 'decode_head.side_adapter_network.w': torch.zeros(1),
             'data_preprocessor.mean': torch.zeros(3)}
    converted = {'image_encoder.a': torch.zeros(3), 'image_encoder.b': torch.zeros(2),
                 REC + 'layers.0.x': torch.zeros(1, 3), 'text_encoder.q': torch.zeros(1),
                 'image_encoder.p': torch.zeros(1)}
    assert check_san_keys(converted, model) == dict(
        missing=['text_encoder.y', 'text_encoder.z'],
        unexpected=['image_encoder.p', 'text_encoder.q'],
        shape_mismatch=[REC + 'layers.0.x', 'image_encoder.a'])
    full = dict(converted)
    for k in ('image_encoder.p', 'text_encoder.q'):
        full.pop(k)
    full.update({'image_encoder.a': torch.zeros(2), REC + 'layers.0.x': torch.zeros(3),
                 'text_encoder.y': torch.zeros(1), 'text_encoder.z': torch.zeros(1)})
    assert check_san_keys(full, model) == dict(missing=[], unexpected=[], shape_mismatch=[])


# ------------------------------------------------------------------ assembling a checkpoint
def test_full_open_clip_checkpoint_is_kept_whole():
    sd = _fake_clip()
    clip, source = open_clip_state_dict_from_checkpoint(sd)
    assert source == 'visual.'
    assert clip.keys() == sd.keys()
    assert all(clip[k] is sd[k] for k in sd)
    # a base does not override its text tower, and adds what it lacks
    base = _fake_clip(seed=1)
    base['extra_text_key'] = torch.zeros(1)
    clip, source = open_clip_state_dict_from_checkpoint(sd, base)
    assert source == 'visual.'
    assert set(clip) == set(sd) | {'extra_text_key'}
    assert all(clip[k] is sd[k] for k in sd)


def test_student_prefix_order_and_base_text_tower():
    base = _fake_clip(seed=1)
    student = {'backbone.visual.' + k[len('visual.'):]: v + 1 for k, v in base.items()
               if k.startswith('visual.')}
    other = {'visual.proj': torch.zeros(6, 4)}  # a second tower under a later prefix
    ckpt = {**student, **other, 'target_generator.backbone.visual.proj': torch.ones(1),
            'head.logit_scale': torch.zeros(())}
    clip, source = open_clip_state_dict_from_checkpoint(ckpt, base)
    assert source == 'backbone.visual.'
    assert set(clip) == set(base)
    for k, v in base.items():
        expect = v + 1 if k.startswith('visual.') else v
        assert torch.equal(clip[k], expect), k
    # the prefixes are tried in the order given
    clip, source = open_clip_state_dict_from_checkpoint(
        ckpt, base, student_prefixes=('visual.', 'backbone.visual.'))
    assert source == 'visual.' and torch.equal(clip['visual.proj'], torch.zeros(6, 4))
    assert 'visual.conv1.weight' not in clip  # only that tower's keys; text from the base
    assert torch.equal(clip['text_projection'], base['text_projection'])
    assert 'head.logit_scale' in clip  # a full checkpoint's own non-visual keys are kept
    # without a base: the student tower alone
    clip, _ = open_clip_state_dict_from_checkpoint(student)
    assert set(clip) == {k for k in base if k.startswith('visual.')}


def test_base_image_tower_only_when_the_checkpoint_has_none():
    base = _fake_clip(seed=2)
    clip, source = open_clip_state_dict_from_checkpoint({'head.w': torch.zeros(1)}, base)
    assert source == 'base visual.'
    assert clip.keys() == base.keys()
    assert all(torch.equal(clip[k], base[k]) for k in base)
    names = 'lkjihgfedcba'  # 12 top-level names: the first 10 in sorted order are listed
    tops = ', '.join(repr(c) for c in 'abcdefghij')
    with pytest.raises(ValueError, match=r"no image tower found: expected keys under "
                                         r"\['backbone.visual.', 'visual.'\], got top-level "
                                         rf"prefixes \[{tops}\]$"):
        open_clip_state_dict_from_checkpoint({f'{c}.w.x': torch.zeros(1) for c in names})
