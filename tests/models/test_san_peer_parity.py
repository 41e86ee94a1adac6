"""The SAN configs named after a paper recipe compute what mmseg 1.2.2's SAN computes; each
deliberate difference is a switch, tested in both positions.

* Config level: every key of our training configs equals mmseg's own SAN config
  (``mmseg/.mim/configs/san/san-vit-{b16,l14}_coco-stuff164k-640x640.py``) except the documented
  differences (:data:`TRAIN_DIFFERENCES`); with the iteration switch set back to mmseg's 60k only
  the non-computational ones (our subclasses, checks, weight path) are left. The test configs'
  model equals mmseg's except the vocabulary of the benchmark.
* Module level: ``densevlm_mm.SAN`` + ``SANTextEncoder`` (default ``templates='vild'``) give
  exactly the segmentation logits of mmseg's ``MultimodalEncoderDecoder`` + ``CLIPTextEncoder`` on
  the same weights; ``templates='densevlm'`` gives the rows of an independent reference (the 63
  prompts written out, each encoded, normalised, averaged, normalised).

``python -m pytest -s tests/models/test_san_peer_parity.py`` prints the figures quoted in
``docs/en/fidelity/san.md``.
"""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: keys in which our paper-recipe training configs differ from mmseg's SAN config, and why
TRAIN_DIFFERENCES = {
    'model.type': 'densevlm_mm.SAN = MultimodalEncoderDecoder + class checks (same forward)',
    'model.text_encoder.type': 'SANTextEncoder = CLIPTextEncoder + vocabularies / files',
    'model.pretrained': 'local converted weights (nothing downloaded)',
    'pretrained': 'local converted weights (nothing downloaded)',
    'custom_imports.imports': 'registers densevlm_mm modules',
    'custom_imports.allow_failed_imports': 'registers densevlm_mm modules',
    'custom_hooks[0].type': 'EvalClassCheckHook (a check, no computation)',
    'max_iters': 'DenseVLM paper Table 7: 80k iterations (mmseg 60k)',
    'train_cfg.max_iters': 'DenseVLM paper Table 7: 80k iterations (mmseg 60k)',
    'param_scheduler[0].end': 'PolyLR over the 80k iterations',
    'train_cfg.val_interval': 'validation every 5k iterations (mmseg 500): cadence only',
    'train_cfg.val_begin': 'validation from 75k (mmseg 55k): cadence only',
}
#: the iteration switch: mmseg's schedule again
MMSEG_SCHEDULE = {'train_cfg.max_iters': 60000, 'param_scheduler.0.end': 60000,
                  'train_cfg.val_interval': 500, 'train_cfg.val_begin': 55000}
NON_COMPUTATIONAL = {'model.type', 'model.text_encoder.type', 'model.pretrained', 'pretrained',
                     'custom_imports.imports', 'custom_imports.allow_failed_imports',
                     'custom_hooks[0].type', 'max_iters'}


def _mmseg_config(name: str) -> str:
    import mmseg
    return osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs', 'san', name)


def _flat(d, prefix=''):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            if k != '_scope_':  # mmengine's scope annotation of imported base configs
                out.update(_flat(v, f'{prefix}.{k}' if prefix else str(k)))
    elif isinstance(d, (list, tuple)) and d and all(isinstance(x, dict) for x in d):
        for i, v in enumerate(d):
            out.update(_flat(v, f'{prefix}[{i}]'))
    else:
        out[prefix] = d
    return out


def config_diff(ours: dict, theirs: dict) -> dict:
    a, b = _flat(ours), _flat(theirs)
    return {k: (a.get(k, '<absent>'), b.get(k, '<absent>')) for k in set(a) | set(b)
            if a.get(k, '<absent>') != b.get(k, '<absent>')}


TRAIN = [('san_vit-b16_coco-stuff164k-640x640_80k.py', 'san-vit-b16_coco-stuff164k-640x640.py'),
         ('san_densevlm-vit-b16_coco-stuff164k-640x640_80k.py',
          'san-vit-b16_coco-stuff164k-640x640.py'),
         ('san_vit-l14_coco-stuff164k-640x640_80k.py', 'san-vit-l14_coco-stuff164k-640x640.py'),
         ('san_densevlm-vit-l14_coco-stuff164k-640x640_80k.py',
          'san-vit-l14_coco-stuff164k-640x640.py')]


@pytest.mark.parametrize('ours,theirs', TRAIN, ids=[t[0] for t in TRAIN])
def test_training_config_is_mmsegs_san_but_the_documented_switches(ours, theirs):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'san', ours))
    ref = Config.fromfile(_mmseg_config(theirs))
    diff = config_diff(cfg.to_dict(), ref.to_dict())
    assert set(diff) == set(TRAIN_DIFFERENCES), sorted(set(diff) ^ set(TRAIN_DIFFERENCES))
    assert cfg.model.text_encoder.templates == ref.model.text_encoder.templates == 'vild'
    assert diff['train_cfg.max_iters'] == (80000, 60000)
    # the switch in mmseg's position: what is left computes nothing
    cfg.merge_from_dict(MMSEG_SCHEDULE)
    assert set(config_diff(cfg.to_dict(), ref.to_dict())) == NON_COMPUTATIONAL


TEST_CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'san', 'san_vit-*_test-*.py')))


@pytest.mark.parametrize('path', TEST_CONFIGS, ids=osp.basename)
def test_test_config_model_is_mmsegs_but_the_benchmark_vocabulary(path):
    """The evaluation model is mmseg's SAN model (same sizes, encoder resolution, text encoder,
    'whole' inference, data preprocessor); only the benchmark's classes differ. The test
    pipeline is mmseg's (shorter side 640, at most 2560)."""
    large = 'vit-l14' in path
    cfg = Config.fromfile(path)
    ref = Config.fromfile(_mmseg_config(f'san-vit-{"l14" if large else "b16"}_'
                                        'coco-stuff164k-640x640.py'))
    diff = config_diff(cfg.model.to_dict(), ref.model.to_dict())
    allowed = {'type', 'text_encoder.type', 'pretrained', 'text_encoder.dataset_name',
               'text_encoder.vocabulary', 'decode_head.num_classes'}
    assert set(diff) <= allowed, sorted(set(diff) - allowed)
    assert cfg.model.text_encoder.templates == 'vild'
    resize = [t for t in cfg.test_dataloader.dataset.pipeline if t.type == 'ResizeShortestEdge']
    ref_resize = [t for t in ref.test_pipeline if t.type == 'ResizeShortestEdge']
    assert len(resize) == len(ref_resize) == 1
    assert min(resize[0].scale if isinstance(resize[0].scale, tuple) else (resize[0].scale, )) \
        == min(ref_resize[0].scale) == 640
    assert resize[0].max_size == ref_resize[0].max_size == 2560


# ------------------------------------------------------------------------------- modules
@pytest.fixture(scope='module')
def tiny_pair():
    """Our tiny SAN (the san_tiny_demo sizes, QuickGELU text tower as mmseg's, 'vild' prompts)
    and mmseg's own MultimodalEncoderDecoder / CLIPTextEncoder with the same config."""
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    import densevlm_mm.models.segmentors  # noqa: F401
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'san', 'san_tiny_demo.py'))
    model = copy.deepcopy(cfg.model)  # a ConfigDict: mmseg's heads read attributes
    model['pretrained'] = None
    model['text_encoder'].pop('act_cfg')  # mmseg's text encoder is QuickGELU only
    model['text_encoder']['templates'] = 'vild'
    theirs = copy.deepcopy(model)
    theirs['type'] = 'MultimodalEncoderDecoder'
    theirs['text_encoder']['type'] = 'CLIPTextEncoder'
    with DefaultScope.overwrite_default_scope('mmseg'):
        torch.manual_seed(0)
        a = MODELS.build(model)
        b = MODELS.build(theirs)
    return same_random_weights(a, b, scale=0.1)


def same_random_weights(ours, theirs, scale: float):
    """Random weights everywhere in ``ours`` (mmseg leaves some ``torch.empty``; norm scales
    around 1), copied strictly into ``theirs``; both in eval mode."""
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for name, p in ours.named_parameters():
            noise = scale * torch.randn(p.shape, generator=g)
            is_scale = p.dim() == 1 and ('norm' in name or 'ln' in name) and 'weight' in name
            p.copy_(1 + noise if is_scale else noise)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def test_san_equals_mmsegs_multimodal_encoder_decoder(tiny_pair):
    """Default switches: segmentation logits identical (same ops on the same weights)."""
    ours, theirs = tiny_pair
    assert type(ours).__name__ == 'SAN' and type(theirs).__name__ == 'MultimodalEncoderDecoder'
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    metas = [dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64))] * 2
    with torch.no_grad():
        rows_a, rows_b = ours.text_encoder(), theirs.text_encoder()
        a, b = ours.encode_decode(x, metas), theirs.encode_decode(x, metas)
    assert torch.equal(rows_a, rows_b)
    assert a.shape == (2, 6, 64, 64) and torch.equal(a, b)
    print(f'\nSAN (densevlm_mm.SAN, templates=vild) vs mmseg MultimodalEncoderDecoder: '
          f'{a.numel()} logits, max |diff| {float((a - b).abs().max()):.1e}; text rows '
          f'{tuple(rows_a.shape)}, max |diff| {float((rows_a - rows_b).abs().max()):.1e}')


def test_densevlm_templates_switch_gives_the_reference_rows(tiny_pair):
    """``templates='densevlm'``: each class's 63 prompts (written out here from spec §7.1:
    article a/an from the raw name, ``This is `` before prompts starting with a/an/the) encoded
    by the CLIP text transformer, L2-normalised, averaged, L2-normalised; the background row
    appended as mmseg does (``cat_bg``). The default ('vild') rows differ from them."""
    import open_clip
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from densevlm_mm.text_embeddings import TEMPLATES
    ours, _ = tiny_pair
    names = list(ours.text_encoder.vocabulary)
    with DefaultScope.overwrite_default_scope('mmseg'):
        dv = MODELS.build(dict(type='densevlm_mm.SANTextEncoder', vocabulary=names,
                               templates='densevlm', embed_dims=32, num_layers=2, num_heads=2,
                               output_dims=32))
    dv.load_state_dict(ours.text_encoder.state_dict(), strict=True)
    dv.eval()
    tok = open_clip.SimpleTokenizer(context_length=77)
    rows = []
    with torch.no_grad():
        for name in names:
            article = 'an' if name[0] in 'aeiou' else 'a'
            prompts = []
            for t in TEMPLATES:
                p = t.replace('{article}', article).replace('{}', name)
                prompts.append('This is ' + p if p.split(' ')[0] in ('a', 'an', 'the') else p)
            f = torch.nn.functional.normalize(dv.encode_text(tok(prompts)), dim=-1)
            rows.append(torch.nn.functional.normalize(f.mean(0), dim=0))
        want = torch.stack(rows)
        want = torch.nn.functional.normalize(torch.cat([want, dv.bg_embed]), dim=-1)
        got = dv() / dv.logit_scale.exp()
        vild = ours.text_encoder() / ours.text_encoder.logit_scale.exp()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert float((vild[:-1] - got[:-1]).abs().max()) > 1e-3  # the switch changes the rows
    print(f"\nSANTextEncoder templates='densevlm' vs the written-out 63-prompt reference: max "
          f'|diff| {float((got - want).abs().max()):.1e}; vs the vild rows: '
          f'{float((vild[:-1] - got[:-1]).abs().max()):.2f}')


def full_size_comparison(name: str = 'san_vit-b16_coco-stuff164k-640x640_80k.py',
                         peer: str = 'san-vit-b16_coco-stuff164k-640x640.py') -> str:
    """The same comparison at full size, built from our config and mmseg's own config (random
    weights, one 640 x 640 image, 171 COCO-Stuff classes). Not part of the suite (about 6 CPU
    minutes): ``python tests/models/test_san_peer_parity.py``."""
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    import densevlm_mm.models.segmentors  # noqa: F401
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'san', name))
    ref = Config.fromfile(_mmseg_config(peer))
    cfg.model.pretrained = ref.model.pretrained = None
    with DefaultScope.overwrite_default_scope('mmseg'):
        torch.manual_seed(0)
        ours, theirs = MODELS.build(cfg.model), MODELS.build(ref.model)
    ours, theirs = same_random_weights(ours, theirs, scale=0.02)
    x = torch.randn(1, 3, 640, 640, generator=torch.Generator().manual_seed(2))
    metas = [dict(img_shape=(640, 640), ori_shape=(640, 640), pad_shape=(640, 640))]
    with torch.no_grad():
        a, b = ours.encode_decode(x, metas), theirs.encode_decode(x, metas)
    return (f'{name} vs mmseg {peer}: {a.numel()} logits {tuple(a.shape)}, identical: '
            f'{torch.equal(a, b)}, max |diff| {float((a - b).abs().max()):.1e}')


if __name__ == '__main__':
    torch.set_num_threads(2)
    print(full_size_comparison())
