"""The API on the downstream models (tiny configs, random weights): CAT-Seg and SAN load with their
own text towers and heads and segment with a vocabulary given at inference time, F-ViT detects a
vocabulary given at inference time; a config or checkpoint given to the wrong loader is refused
with the loader to use (nothing dropped silently)."""
import json
import os.path as osp

import numpy as np
import pytest
import torch

from densevlm_mm.apis import (detect, inference_segmentor, init_detector, init_model,
                              init_segmentor)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CATSEG = osp.join(REPO, 'configs', 'catseg', 'catseg_tiny_demo.py')
SAN = osp.join(REPO, 'configs', 'san', 'san_tiny_demo.py')
FVIT = osp.join(REPO, 'configs', 'fvit', 'fvit_tiny_demo.py')
DENSEVLM = osp.join(REPO, 'configs', 'densevlm', 'densevlm_tiny_demo.py')
CLASSES = ['sky', 'car', 'grass', 'person', 'road', 'dog']
H, W = 48, 64

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _image() -> np.ndarray:
    rng = np.random.default_rng(2)
    img = np.zeros((H, W, 3), dtype=np.float32)
    img[:H // 2] = (90, 160, 230)
    img[H // 2:] = (60, 170, 60)
    img[10:40, 20:44] = (200, 30, 30)
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


def _build(config: str, scope: str, **options):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from densevlm_mm.registry import MODELS
    from densevlm_mm.utils import register_all_modules
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options)
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg.model)


def _save_trained(model, path, prefix: str, seed: int):
    """Save the model's weights with the ``prefix`` ones moved (a stand-in for fine-tuning, so
    that a loader taking them from anywhere else is caught); ``(path, weights)``."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for k, v in state.items():
        if k.startswith(prefix) and v.is_floating_point():
            state[k] = v + 0.05 * torch.randn(v.shape, generator=gen)
    torch.save(dict(meta={}, state_dict=state), path)
    return str(path), state


@pytest.fixture(scope='module')
def catseg_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = _build(CATSEG, 'mmseg', **{'model.train_classes': CLASSES})
    return _save_trained(model, tmp_path_factory.mktemp('catseg') / 'iter_60.pth',
                         'text_encoder.', seed=1)


@pytest.fixture(scope='module')
def san_ckpt(tmp_path_factory):
    from densevlm_mm.models.clip_factory import create_clip
    from densevlm_mm.models.segmentors.san_converter import convert_open_clip_to_san
    torch.manual_seed(0)
    model = _build(SAN, 'mmseg', **{'model.pretrained': None})
    # mmseg's SAN text tower is torch.empty until the CLIP weights arrive: give it a tiny CLIP
    converted, _ = convert_open_clip_to_san(create_clip('densevlm-tiny-vit')[0].state_dict(),
                                            visual_split=2)
    model.load_state_dict(converted, strict=False)
    return _save_trained(model, tmp_path_factory.mktemp('san') / 'iter_40.pth',
                         'text_encoder.', seed=2)


@pytest.fixture(scope='module')
def fvit(tmp_path_factory):
    """A tiny F-ViT checkpoint whose class rows come from a tiny CLIP's text tower."""
    from densevlm_mm.models.clip_factory import create_clip
    from densevlm_mm.text_embeddings import generate_text_embedding_file
    root = tmp_path_factory.mktemp('fvit')
    torch.manual_seed(0)
    torch.save(create_clip('densevlm-tiny-eva02')[0].state_dict(), root / 'clip.pt')
    (root / 'vocab.json').write_text(json.dumps([dict(name=n, isthing=1) for n in
                                                 ('person', 'car', 'dog', 'bottle')]))
    generate_text_embedding_file('densevlm-tiny-eva02', str(root / 'clip.pt'),
                                 str(root / 'vocab.json'), str(root / 'text.pt'),
                                 templates=['a photo of a {}.'], progress=False)
    opts = {'model.roi_head.bbox_head.text_embeddings': str(root / 'text.pt')}
    torch.manual_seed(0)
    detector = init_detector(FVIT, None, cfg_options={**opts,
                                                      'model.backbone.pretrained': str(root /
                                                                                       'clip.pt')})
    torch.save(dict(meta={}, state_dict=detector.state_dict()), root / 'epoch_4.pth')
    return dict(root=root, ckpt=str(root / 'epoch_4.pth'), clip=str(root / 'clip.pt'),
                opts=opts)


def _same_weights(model, state):
    got = model.state_dict()
    assert got.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(got[k].cpu(), v), k


# ----------------------------------------------------------------------------------- CAT-Seg
def test_catseg_checkpoint_loads_with_its_own_text_tower_and_head(catseg_ckpt):
    path, state = catseg_ckpt
    model = init_segmentor(CATSEG, path)
    _same_weights(model, state)  # image tower, the fine-tuned text tower and the head
    assert list(model.dataset_meta['classes']) == CLASSES  # test_classes='from_dataset': trained


def test_catseg_segments_a_vocabulary_named_at_inference(catseg_ckpt):
    model = init_segmentor(CATSEG, catseg_ckpt[0])
    image = _image()
    vocab = ['sky', 'grass', 'zebra']
    result = inference_segmentor(model, image, vocab)
    assert result.names == vocab and result.label_map.shape == (H, W)
    assert torch.allclose(model.text_features(), model.text_encoder(vocab))
    # the same numbers by hand: RGB normalised with the config's statistics, the segmentor's
    # own inference (CAT-Seg resizes to its CLIP resolution and back), arg-max
    pre = model.cfg.model.data_preprocessor
    x = (torch.from_numpy(image).permute(2, 0, 1).float()
         - torch.tensor(pre.mean).view(3, 1, 1)) / torch.tensor(pre.std).view(3, 1, 1)
    with torch.no_grad():
        probs = model.inference(x[None], [dict(ori_shape=(H, W), img_shape=(H, W))])[0]
    np.testing.assert_array_equal(result.label_map, probs.argmax(0).numpy())
    np.testing.assert_allclose(result.score_map, probs.max(0).values.numpy(), atol=1e-5)
    # classes are matched, not positions: the same vocabulary in another order, the same picture
    again = inference_segmentor(model, image, ['zebra', 'sky', 'grass'])
    np.testing.assert_array_equal(np.asarray(again.names)[again.label_map],
                                  np.asarray(result.names)[result.label_map])


# --------------------------------------------------------------------------------------- SAN
def test_san_checkpoint_loads_and_segments_a_vocabulary_named_at_inference(san_ckpt):
    path, state = san_ckpt
    model = init_segmentor(SAN, path)
    _same_weights(model, state)
    assert list(model.dataset_meta['classes']) == CLASSES
    image = _image()
    result = inference_segmentor(model, image, ['road', 'person', 'zebra'])
    assert result.data_sample.seg_logits.data.shape == (3, H, W)
    assert model.num_classes == model.decode_head.num_classes == 3
    assert result.label_map.shape == (H, W) and result.label_map.max() < 3
    swapped = inference_segmentor(model, image, ['zebra', 'road', 'person'])
    np.testing.assert_array_equal(np.asarray(swapped.names)[swapped.label_map],
                                  np.asarray(result.names)[result.label_map])
    np.testing.assert_allclose(swapped.score_map, result.score_map, atol=1e-5)
    preset = inference_segmentor(model, image, 'ovcoco_17_novel')
    assert len(preset.names) == 17 and preset.data_sample.seg_logits.data.shape[0] == 17


# ------------------------------------------------------------------------------------- F-ViT
def test_fvit_detects_a_vocabulary_named_at_inference(fvit):
    image = _image()
    det = init_detector(FVIT, fvit['ckpt'], cfg_options=fvit['opts'],
                        text_checkpoint=fvit['clip'])
    own = detect(det, image, score_thr=0.2)
    assert own.class_names == ['person', 'car', 'dog', 'bottle'] and 0 < len(own.boxes) < 100
    # its own classes named in another order: the same detections (rows re-encoded by the text
    # tower equal the file's; person / car keep the base weighting of the ensemble)
    named = detect(det, image, score_thr=0.2, vocabulary=['bottle', 'dog', 'car', 'person'])
    assert named.class_names == ['bottle', 'dog', 'car', 'person']

    def key(d):
        return sorted((tuple(np.round(b, 2)), d.class_names[lab], round(float(s), 4))
                      for b, lab, s in zip(d.boxes, d.labels, d.scores))
    assert key(named) == key(own)
    head = det.roi_head.bbox_head
    assert head.train_mask.tolist() == [False, False, True, True, True]
    new = detect(det, image, score_thr=0.0, vocabulary=['zebra', 'person'])
    assert new.class_names == ['zebra', 'person'] and set(new.labels.tolist()) <= {0, 1}
    assert head.num_classes == 2 and head.train_mask.tolist() == [False, True, True]


def test_fvit_vocabulary_needs_the_text_tower_that_made_its_rows(fvit, tmp_path):
    image = _image()
    no_text = init_detector(FVIT, fvit['ckpt'],
                            cfg_options={**fvit['opts'], 'model.backbone.pretrained': None})
    with pytest.raises(ValueError, match='no text tower.*text_checkpoint'):
        detect(no_text, image, vocabulary=['zebra', 'person'])
    from densevlm_mm.models.clip_factory import create_clip
    visual = create_clip('densevlm-tiny-eva02')[0].visual.state_dict()
    torch.save({f'backbone.visual.{k}': v for k, v in visual.items()}, tmp_path / 'epoch_5.pth')
    image_only = init_detector(FVIT, fvit['ckpt'], cfg_options={
        **fvit['opts'], 'model.backbone.pretrained': str(tmp_path / 'epoch_5.pth')})
    with pytest.raises(ValueError, match='model.backbone.pretrained .*epoch_5.pth.* holds no '
                                         'text tower.*--text-checkpoint'):
        detect(image_only, image, vocabulary=['zebra', 'person'])
    torch.manual_seed(9)
    torch.save(create_clip('densevlm-tiny-eva02')[0].state_dict(), tmp_path / 'other.pt')
    other = init_detector(FVIT, fvit['ckpt'], cfg_options=fvit['opts'],
                          text_checkpoint=str(tmp_path / 'other.pt'))
    with pytest.raises(ValueError, match='does not reproduce the detector\'s class embeddings'):
        detect(other, image, vocabulary=['zebra', 'person'])
    assert detect(other, image, score_thr=0.2).class_names == ['person', 'car', 'dog', 'bottle']


# -------------------------------------------------- the wrong loader: refused, with the right one
def test_init_model_refuses_a_catseg_checkpoint_with_any_model(catseg_ckpt, demo):
    path = catseg_ckpt[0]
    student = osp.join(demo, 'checkpoints', 'student.pt')
    with pytest.raises(ValueError, match=r'CAT-Seg segmentor, which init_model does not load.*'
                                         r'would drop them.*init_segmentor'):
        init_model(DENSEVLM, path, cfg_options={'model.backbone.pretrained': student})
    with pytest.raises(ValueError, match='CAT-Seg segmentor.*init_segmentor'):
        init_model('densevlm-tiny-eva02', path)


def test_init_model_refuses_catseg_san_and_fvit_configs(catseg_ckpt):
    for config, what, loader in ((CATSEG, 'CAT-Seg', 'init_segmentor'),
                                 (SAN, 'SAN', 'init_segmentor'),
                                 (FVIT, 'F-ViT', 'init_detector')):
        with pytest.raises(ValueError, match=f'{what}.*init_model does not load.*{loader}'):
            init_model(config, catseg_ckpt[0])
        with pytest.raises(ValueError, match=f'{what}.*{loader}'):
            init_model(config)  # formerly: a random text tower behind a warning


def test_init_model_refuses_san_and_fvit_checkpoints(san_ckpt, fvit):
    with pytest.raises(ValueError, match='SAN segmentor.*init_segmentor'):
        init_model('densevlm-tiny-vit', san_ckpt[0])
    with pytest.raises(ValueError, match='F-ViT detector.*init_detector'):
        init_model('densevlm-tiny-eva02', fvit['ckpt'])


def test_segmentor_and_detector_loaders_refuse_other_kinds(catseg_ckpt, san_ckpt, fvit, demo):
    with pytest.raises(ValueError, match='CAT-Seg segmentor but .*san_tiny_demo.py builds a SAN'):
        init_segmentor(SAN, catseg_ckpt[0])
    with pytest.raises(ValueError, match='SAN segmentor but .*builds a CAT-Seg'):
        init_segmentor(CATSEG, san_ckpt[0])
    with pytest.raises(ValueError, match='CLIP model.*init_segmentor does not load.*init_model'):
        init_segmentor(CATSEG, osp.join(demo, 'checkpoints', 'student.pt'))
    with pytest.raises(ValueError, match='F-ViT detector.*init_detector'):
        init_segmentor(FVIT, fvit['ckpt'])
    with pytest.raises(FileNotFoundError, match='needs the trained segmentor'):
        init_segmentor(CATSEG, None)
    with pytest.raises(ValueError, match='CAT-Seg segmentor.*init_segmentor'):
        init_detector(FVIT, catseg_ckpt[0], cfg_options=fvit['opts'])
    with pytest.raises(ValueError, match='CAT-Seg segmentor.*init_segmentor'):
        init_detector(CATSEG, None)


def test_demo_models_prefer_what_make_demo_trained(demo, tmp_path):
    """``demo_models`` takes the newest checkpoints of the demo's stages when they exist (random
    stand-ins are written only for the stages that have not run; the API guide runs on them)."""
    import shutil

    from densevlm_mm.apis.tiny_demo import demo_models
    root = tmp_path / 'tiny_demo'
    shutil.copytree(demo, root)
    for name in ('train/epoch_2.pth', 'train/epoch_10.pth', 'segment/iter_60.pth',
                 'detect/epoch_4.pth', 'detect/text/detect_classes.pt'):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b'')
    models = demo_models(str(root))
    assert models['dense'] == str(root / 'train' / 'epoch_10.pth')
    assert models['catseg'] == str(root / 'segment' / 'iter_60.pth')
    assert models['fvit'] == str(root / 'detect' / 'epoch_4.pth')
    assert models['fvit_config'].model.roi_head.bbox_head.text_embeddings == \
        str(root / 'detect' / 'text' / 'detect_classes.pt')
    assert models['dense_config'].model.backbone.pretrained == models['clip'] == \
        str(root / 'checkpoints' / 'student.pt')
    assert not (root / 'standin').exists()
