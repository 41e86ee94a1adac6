"""CLIPSelf F-ViT (mmdet 2.x keys) → this package's F-ViT: strict key accounting on a synthetic
mmdet-2.x-layout state dict made from the tiny model."""
import os.path as osp
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
STUDENT = 'densevlm-tiny-eva02'


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """The tiny F-ViT (random student, random 4-class text file) and its config."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    from densevlm_mm.datasets.synthetic_detection import CLASSES
    from densevlm_mm.text_embeddings import TextEmbeddings
    from densevlm_mm.utils import register_all_modules
    root = tmp_path_factory.mktemp('conv')
    text = str(root / 'text.pt')
    torch.manual_seed(0)
    TextEmbeddings(torch.randn(len(CLASSES), 32), list(CLASSES),
                   torch.ones(len(CLASSES), dtype=torch.bool)).save(text)
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'fvit', 'fvit_tiny_demo.py'))
    cfg.model.backbone.pretrained = None
    cfg.model.roi_head.bbox_head.text_embeddings = text
    cfg.model.roi_head.bbox_head.background = 'learned'
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('densevlm_mm'):
        model = MODELS.build(cfg.model)
    return model, cfg, root


def to_mmdet2(state):
    """Our layout → CLIPSelf's mmdet-2.x F-ViT layout (the inverse of the documented table)."""
    from densevlm_mm.models.backbones.eva_converter import convert_open_clip_to_eva_clip_state_dict
    visual = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    eva, unmapped = convert_open_clip_to_eva_clip_state_dict(visual)
    assert not unmapped
    old = {'backbone.' + k: v for k, v in eva.items()}
    for k, v in state.items():
        if k.startswith('neck.0.upsample_4x.'):
            old['backbone.interpolate1.' + k[len('neck.0.upsample_4x.'):]] = v
        elif k.startswith('neck.0.upsample_2x.'):
            old['backbone.interpolate2.' + k[len('neck.0.upsample_2x.'):]] = v
        elif k.startswith('neck.1.'):
            old['neck.' + k[len('neck.1.'):]] = v
        elif k.startswith(('rpn_head.', 'roi_head.bbox_head.shared', 'roi_head.bbox_head.cls_fcs',
                           'roi_head.bbox_head.reg_fcs', 'roi_head.bbox_head.fc_reg')):
            old[k] = v
    head = 'roi_head.bbox_head.'
    old[head + 'all_embeddings'] = torch.cat([state[head + 'fc_cls.class_embeddings'],
                                              torch.zeros(32, 1)], dim=1)
    old[head + 'bg_embedding'] = state[head + 'fc_cls.bg_embedding']
    old[head + 'detect_temperature'] = state[head + 'fc_cls.temperature']
    old[head + 'fc_cls.weight'] = torch.zeros(5, 32)  # the unused mmdet classifier
    old[head + 'fc_cls.bias'] = torch.zeros(5)
    return old


def test_key_accounting_and_strict_load(tiny):
    from densevlm_mm.models.detectors import convert_fvit_mmdet2_state_dict
    model, _, _ = tiny
    state = {k: v.clone() + (0.5 if v.is_floating_point() else 0) for k, v in
             model.state_dict().items()}
    old = to_mmdet2(state)
    old['backbone.visual.rope.freqs_cos'] = torch.zeros(3)  # vendored RoPE buffer
    old['roi_head.bbox_head.something_new.weight'] = torch.zeros(2)
    new, report = convert_fvit_mmdet2_state_dict(old)
    # every source key is in exactly one bucket
    buckets = [set(report['renamed']), set(report['dropped']), set(report['unmapped'])]
    assert sum(len(b) for b in buckets) == len(old)
    assert set().union(*buckets) == set(old)
    assert report['unmapped'] == ['roi_head.bbox_head.something_new.weight']
    assert set(report['dropped']) == {'backbone.visual.rope.freqs_cos',
                                      'roi_head.bbox_head.fc_cls.weight',
                                      'roi_head.bbox_head.fc_cls.bias'}
    # the result is exactly our state dict (strict load, same values)
    result = model.load_state_dict(new, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_reference_background_column_comes_from_all_embeddings(tiny):
    from densevlm_mm.models.detectors import convert_fvit_mmdet2_state_dict
    model, _, _ = tiny
    old = to_mmdet2(model.state_dict())
    del old['roi_head.bbox_head.bg_embedding']  # learn_bg=False: background = last column
    old['roi_head.bbox_head.all_embeddings'][:, -1] = 7.0
    new, report = convert_fvit_mmdet2_state_dict(old)
    assert not report['unmapped']
    assert torch.equal(new['roi_head.bbox_head.fc_cls.bg_embedding'], torch.full((32, 1), 7.0))


def test_converter_tool(tiny, tmp_path):
    sys.path.insert(0, osp.join(REPO, 'tools', 'model_converters'))
    import fvit_mmdet2_to_mmdet3 as tool
    model, cfg, root = tiny
    old = to_mmdet2(model.state_dict())
    src, dst = str(tmp_path / 'old.pth'), str(tmp_path / 'new.pth')
    torch.save(dict(state_dict=old, meta=dict(mmdet_version='2.28.1')), src)
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    assert tool.main([src, dst, '--config', cfg_path]) == 0
    saved = torch.load(dst, map_location='cpu', weights_only=True)['state_dict']
    assert saved.keys() == model.state_dict().keys()
    old['neck.extra_layer.weight'] = torch.zeros(1)
    torch.save(old, src)
    assert tool.main([src, str(tmp_path / 'partial.pth')]) == 1
    assert not osp.exists(tmp_path / 'partial.pth')
