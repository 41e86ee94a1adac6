"""create_clip / register_bundled_configs: offline stock open_clip models and safe loading."""
import argparse

import open_clip
import pytest
import torch

from densevlm_mm.models.clip_factory import (BUNDLED_CONFIG_DIR, create_clip,
                                             register_bundled_configs)

TINY = ['densevlm-tiny-vit', 'densevlm-tiny-eva02', 'densevlm-tiny-eva02-teacher',
        'densevlm-tiny-rn', 'densevlm-tiny-convnext']


def test_register_bundled_configs_idempotent():
    register_bundled_configs()
    n_paths = len(open_clip.factory._MODEL_CONFIG_PATHS)
    register_bundled_configs()
    assert len(open_clip.factory._MODEL_CONFIG_PATHS) == n_paths
    assert set(TINY) <= set(open_clip.list_models())
    assert {p.stem for p in BUNDLED_CONFIG_DIR.glob('*.json')} == set(TINY)


@pytest.mark.parametrize('name,embed,size', [('densevlm-tiny-vit', 32, 64),
                                             ('densevlm-tiny-eva02', 32, 64),
                                             ('densevlm-tiny-eva02-teacher', 48, 56),
                                             ('densevlm-tiny-rn', 32, 64),
                                             ('densevlm-tiny-convnext', 32, 64)])
def test_tiny_models_and_offline_tokenizer(name, embed, size):
    model, tokenizer = create_clip(name)
    tokens = tokenizer(['a photo of a cat.', 'a dog'])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.long
    with torch.no_grad():
        assert model.encode_text(tokens).shape == (2, embed)
        assert model.encode_image(torch.randn(1, 3, size, size)).shape == (1, embed)


def test_eva02_tiny_keeps_b16_structure():
    from timm.models.eva import Eva
    model, _ = create_clip('densevlm-tiny-eva02')
    trunk = model.visual.trunk
    assert isinstance(trunk, Eva) and trunk.rope is not None
    blk = trunk.blocks[0]
    assert blk.attn.qkv is None and blk.attn.q_proj is not None  # separate q/k/v
    assert blk.attn.k_proj.bias is None and blk.attn.q_proj.bias is not None
    assert type(blk.mlp).__name__ == 'SwiGLU' and not isinstance(blk.mlp.norm, torch.nn.Identity)
    assert not isinstance(blk.attn.norm, torch.nn.Identity)  # scale_attn_inner (sub-LN)
    assert isinstance(trunk.head, torch.nn.Linear) and trunk.head.bias is not None
    assert trunk.patch_embed.patch_size == (16, 16)
    teacher, _ = create_clip('densevlm-tiny-eva02-teacher')
    assert teacher.visual.trunk.patch_embed.patch_size == (14, 14)


def test_model_cfg_dict_with_timm_kwargs():
    cfg = {
        'embed_dim': 16,
        'vision_cfg': {'image_size': 32, 'timm_model_name': 'eva02_base_patch16_clip_224',
                       'timm_model_kwargs': {'img_size': 32, 'embed_dim': 32, 'depth': 1,
                                             'num_heads': 1, 'ref_feat_shape': [2, 2]},
                       'timm_pool': 'token', 'timm_proj': None},
        'text_cfg': {'context_length': 16, 'vocab_size': 49408, 'width': 16, 'heads': 1,
                     'layers': 1},
        'custom_text': True,
    }
    model, tokenizer = create_clip('my-custom', model_cfg=cfg)
    assert len(model.visual.trunk.blocks) == 1
    assert tokenizer(['x']).shape == (1, 16)
    with pytest.raises(ValueError, match='embed_dim'):
        create_clip('bad', model_cfg={'vision_cfg': {}, 'text_cfg': {}})


def test_pretrained_tag_or_missing_file_raises(tmp_path):
    with pytest.raises(ValueError, match='never downloads'):
        create_clip('EVA02-B-16', pretrained='merged2b_s8b_b131k')
    with pytest.raises(ValueError, match='local file path'):
        create_clip('densevlm-tiny-vit', pretrained=str(tmp_path / 'nope.pt'))
    with pytest.raises(ValueError, match='unknown open_clip model'):
        create_clip('no-such-model')


def _same(a, b):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a.encode_image(x), b.encode_image(x))
        tok = torch.randint(1, 1000, (1, 77))
        torch.testing.assert_close(a.encode_text(tok), b.encode_text(tok))


@pytest.fixture(scope='module')
def tiny_vit():
    torch.manual_seed(0)
    return create_clip('densevlm-tiny-vit')[0].eval()


def test_load_raw_wrapped_and_safetensors(tmp_path, tiny_vit):
    from safetensors.torch import save_file
    sd = tiny_vit.state_dict()
    torch.save(sd, tmp_path / 'raw.pt')
    torch.save({'epoch': 3, 'state_dict': {'module.' + k: v for k, v in sd.items()}},
               tmp_path / 'wrapped.pth')
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / 'w.safetensors')
    for f in ['raw.pt', 'wrapped.pth', 'w.safetensors']:
        model, _ = create_clip('densevlm-tiny-vit', pretrained=str(tmp_path / f))
        _same(model.eval(), tiny_vit)


def test_missing_unexpected_and_unsafe_files_raise(tmp_path, tiny_vit):
    sd = dict(tiny_vit.state_dict())
    sd.pop('visual.proj')
    torch.save(sd, tmp_path / 'missing.pt')
    with pytest.raises(RuntimeError, match='missing'):
        create_clip('densevlm-tiny-vit', pretrained=str(tmp_path / 'missing.pt'))
    sd = dict(tiny_vit.state_dict(), extra_thing=torch.zeros(1))
    torch.save(sd, tmp_path / 'extra.pt')
    with pytest.raises(RuntimeError, match='unexpected'):
        create_clip('densevlm-tiny-vit', pretrained=str(tmp_path / 'extra.pt'))
    torch.save({'state_dict': dict(tiny_vit.state_dict()),
                'args': argparse.Namespace(lr=0.1)},
               tmp_path / 'pickled.pt')
    with pytest.raises(RuntimeError, match='weights_only'):
        create_clip('densevlm-tiny-vit', pretrained=str(tmp_path / 'pickled.pt'))


def test_visual_only_file_and_frozen_bn_checkpoint(tmp_path):
    torch.manual_seed(1)
    rn, _ = create_clip('densevlm-tiny-rn')
    rn.eval()
    # FrozenBatchNorm2d checkpoints (reference RN) lack num_batches_tracked
    sd = {k: v for k, v in rn.state_dict().items() if not k.endswith('num_batches_tracked')}
    torch.save(sd, tmp_path / 'rn.pt')
    loaded, _ = create_clip('densevlm-tiny-rn', pretrained=str(tmp_path / 'rn.pt'))
    _same(loaded.eval(), rn)
    # an image-tower-only file fills .visual
    torch.save({k: v for k, v in rn.state_dict().items() if k.startswith('visual.')},
               tmp_path / 'visual.pt')
    vis, _ = create_clip('densevlm-tiny-rn', pretrained=str(tmp_path / 'visual.pt'))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(vis.eval().encode_image(x), rn.encode_image(x))
