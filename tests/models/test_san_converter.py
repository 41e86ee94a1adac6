"""open_clip → SAN conversion: strict key accounting and numerically equal outputs.

mmseg's modules (image encoder ``VisionTransformer``, ``SideAdapterCLIPHead``'s
``RecWithAttnbias``, ``CLIPTextEncoder``) on the converted weights must compute what the open_clip
towers compute on the same input (tiny OpenAI-style ViT, random weights).
"""
import copy
import json
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from densevlm_mm.models.clip_factory import BUNDLED_CONFIG_DIR, create_clip
from densevlm_mm.models.segmentors.san_converter import (check_san_keys, convert_open_clip_to_san,
                                                         open_clip_state_dict_from_checkpoint)

SPLIT = 2  # of the tiny ViT's 3 blocks: 2 in the image encoder, 1 in the head
TINY = json.load(open(osp.join(BUNDLED_CONFIG_DIR, 'densevlm-tiny-vit.json')))


def tiny_clip(quick_gelu: bool):
    cfg = copy.deepcopy(TINY)
    cfg['quick_gelu'] = quick_gelu
    torch.manual_seed(0)
    model, tok = create_clip('densevlm-tiny-vit', model_cfg=cfg)
    with torch.no_grad():  # non-trivial norms and embeddings
        for name, p in model.named_parameters():
            if 'ln' in name or 'embedding' in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval(), tok


def san_modules(act: str):
    """mmseg's VisionTransformer / RecWithAttnbias / CLIPTextEncoder with the tiny dims."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        return _san_modules(act)


def _san_modules(act: str):
    from mmseg.models.backbones import VisionTransformer
    from mmseg.models.decode_heads.san_head import RecWithAttnbias
    from mmseg.models.text_encoder import CLIPTextEncoder
    v, t = TINY['vision_cfg'], TINY['text_cfg']
    heads = v['width'] // v['head_width']
    image = VisionTransformer(
        img_size=(v['image_size'], v['image_size']), patch_size=v['patch_size'], patch_pad=0,
        embed_dims=v['width'], num_layers=SPLIT, num_heads=heads, mlp_ratio=4, out_origin=True,
        out_indices=(SPLIT - 1, ), qkv_bias=True, with_cls_token=True, output_cls_token=True,
        patch_bias=False, pre_norm=True, norm_cfg=dict(type='LN', eps=1e-5),
        act_cfg=dict(type=act), interpolate_mode='bicubic')
    rec = RecWithAttnbias(sos_token_format='cls_token', sos_token_num=1,
                          num_layers=v['layers'] - SPLIT, embed_dims=v['width'], num_heads=heads,
                          out_dims=TINY['embed_dim'], final_norm=True, act_cfg=dict(type=act),
                          norm_cfg=dict(type='LN', eps=1e-5))
    text = CLIPTextEncoder(vocabulary=['x'], embed_dims=t['width'], num_layers=t['layers'],
                           num_heads=t['heads'], output_dims=TINY['embed_dim'],
                           norm_cfg=dict(type='LN', eps=1e-5))
    for module in (image, rec, text):
        module.eval()  # (mmseg's VisionTransformer.train() returns None)
    return image, rec, text


def load_part(module, converted, prefix):
    part = {k[len(prefix):]: v for k, v in converted.items() if k.startswith(prefix)}
    result = module.load_state_dict(part, strict=False)
    own = {'bg_embed'}
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= own, result.missing_keys


@pytest.mark.parametrize('quick_gelu,act', [(False, 'GELU'), (True, 'QuickGELU')])
def test_converted_san_modules_equal_open_clip(quick_gelu, act):
    import densevlm_mm.models.segmentors  # noqa: F401  (QuickGELU is registered by mmseg)
    model, tokenizer = tiny_clip(quick_gelu)
    converted, unmapped = convert_open_clip_to_san(model.state_dict(), visual_split=SPLIT)
    assert unmapped == []
    image, rec, text = san_modules(act)
    load_part(image, converted, 'image_encoder.')
    load_part(rec, converted, 'decode_head.rec_with_attnbias.')
    load_part(text, converted, 'text_encoder.')

    x = torch.randn(2, 3, 64, 64)  # open_clip's native size (it does not resize positions)
    with torch.no_grad():
        # image encoder = the first SPLIT blocks (open_clip's own intermediates API)
        feat, cls = image(x)[-1]
        ref = model.visual.forward_intermediates(x, indices=[SPLIT - 1], intermediates_only=True,
                                                 output_extra_tokens=True)
        torch.testing.assert_close(feat, ref['image_intermediates'][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cls, ref['image_intermediates_prefix'][0][:, 0], atol=1e-5,
                                   rtol=1e-5)
        # + the head's recognition blocks with an all-zero attention bias: the SOS token (a copy of
        # CLS that sees itself and the patches) ends as open_clip's pooled, projected image embedding
        bias = torch.zeros(2, 1, 1, *feat.shape[-2:])
        sos = rec([bias], [feat, cls])[:, 0]
        torch.testing.assert_close(sos, F.normalize(model.encode_image(x), dim=-1), atol=1e-5,
                                   rtol=1e-5)
        # text encoder: mmseg's CLIPTextEncoder hard-codes QuickGELU (OpenAI CLIP), so it equals
        # only a QuickGELU text tower
        tokens = tokenizer(['a photo of a dog.', 'there is the sky in the scene.'])
        same = torch.allclose(text.encode_text(tokens), model.encode_text(tokens), atol=1e-5,
                              rtol=1e-5)
        assert same == quick_gelu
        # SANTextEncoder sets the activation of the tower it is converted from
        from densevlm_mm.models.segmentors import SANTextEncoder
        from mmengine.registry import DefaultScope
        t = TINY['text_cfg']
        with DefaultScope.overwrite_default_scope('mmseg'):
            ours = SANTextEncoder(vocabulary=['x'], embed_dims=t['width'], num_layers=t['layers'],
                                  num_heads=t['heads'], output_dims=TINY['embed_dim'],
                                  norm_cfg=dict(type='LN', eps=1e-5), act_cfg=dict(type=act))
        load_part(ours, converted, 'text_encoder.')
        torch.testing.assert_close(ours.encode_text(tokens), model.encode_text(tokens), atol=1e-5,
                                   rtol=1e-5)


def test_converter_key_accounting_against_built_san():
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    import densevlm_mm.models.segmentors  # noqa: F401
    model, _ = tiny_clip(False)
    converted, unmapped = convert_open_clip_to_san(model.state_dict(), visual_split=SPLIT)
    cfg = Config.fromfile(osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                                   'configs', 'san', 'san_tiny_demo.py'))
    cfg.model.pretrained = None
    with DefaultScope.overwrite_default_scope('mmseg'):
        san = MODELS.build(cfg.model)
    report = check_san_keys(converted, san.state_dict())
    assert report == dict(missing=[], unexpected=[], shape_mismatch=[])
    # a foreign key is reported, never dropped silently
    sd = dict(model.state_dict(), **{'visual.extra.weight': torch.zeros(1)})
    assert convert_open_clip_to_san(sd, SPLIT)[1] == ['visual.extra.weight']
    with pytest.raises(ValueError, match='visual_split'):
        convert_open_clip_to_san(model.state_dict(), visual_split=3)


def test_densevlm_checkpoint_takes_text_tower_from_base():
    model, _ = tiny_clip(False)
    base = model.state_dict()
    student = {'backbone.visual.' + k[len('visual.'):]: v + 1 for k, v in base.items()
               if k.startswith('visual.')}
    student['head.logit_scale'] = torch.zeros(())
    clip, source = open_clip_state_dict_from_checkpoint(student, base)
    assert source == 'backbone.visual.'
    assert set(clip) == set(base)
    torch.testing.assert_close(clip['visual.proj'], base['visual.proj'] + 1)  # the student's
    torch.testing.assert_close(clip['text_projection'], base['text_projection'])  # the base's
    with pytest.raises(ValueError, match='no image tower'):
        open_clip_state_dict_from_checkpoint({'head.w': torch.zeros(1)})


def test_san_text_rows_equal_densevlm_text_embeddings():
    """SANTextEncoder (templates='densevlm') on converted weights gives the rows that
    densevlm_mm.text_embeddings computes with the open_clip model: the backbone's templates."""
    from mmengine.registry import DefaultScope

    from densevlm_mm.models.segmentors import SANTextEncoder
    from densevlm_mm.text_embeddings import build_text_embeddings
    model, tokenizer = tiny_clip(False)
    converted, _ = convert_open_clip_to_san(model.state_dict(), visual_split=SPLIT)
    names = ['sky', 'person', 'apple']
    t = TINY['text_cfg']
    with DefaultScope.overwrite_default_scope('mmseg'):
        ours = SANTextEncoder(vocabulary=names, templates='densevlm', embed_dims=t['width'],
                              num_layers=t['layers'], num_heads=t['heads'],
                              output_dims=TINY['embed_dim'],
                              norm_cfg=dict(type='LN', eps=1e-5), act_cfg=dict(type='GELU'),
                              cat_bg=False)
    load_part(ours, converted, 'text_encoder.')
    ours.eval()
    rows = ours() / ours.logit_scale.exp()
    torch.testing.assert_close(rows, build_text_embeddings(model, tokenizer, names), atol=1e-5,
                               rtol=1e-5)
    assert len(ours.templates) == 63


def test_converter_tool(tmp_path):
    from conftest import load_tool
    tool = load_tool('model_converters/open_clip_to_san.py')
    repo = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    model, _ = tiny_clip(False)
    base = str(tmp_path / 'base.pt')
    torch.save(model.state_dict(), base)
    student = {'backbone.visual.' + k[len('visual.'):]: v for k, v in model.state_dict().items()
               if k.startswith('visual.')}
    work = str(tmp_path / 'epoch_1.pth')
    torch.save(dict(state_dict=student, meta=dict(epoch=1)), work)
    out = str(tmp_path / 'san.pth')
    config = osp.join(repo, 'configs', 'san', 'san_tiny_demo.py')
    assert tool.main([work, out, '--base', base, '--split', '2', '--config', config]) == 0
    converted = torch.load(out, weights_only=True)
    torch.testing.assert_close(converted['decode_head.rec_with_attnbias.proj.weight'],
                               model.state_dict()['visual.proj'].t())
    assert 'text_encoder.token_embedding.weight' in converted
    with pytest.raises(SystemExit):  # a DenseVLM checkpoint alone has no text tower
        tool.main([work, out, '--split', '2'])
    with pytest.raises(SystemExit):  # 3 blocks: no default split
        tool.main([base, out])
