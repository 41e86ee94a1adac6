"""The Python API on tiny random models: label maps name known regions, regions are classified,
models load from configs + work-dir checkpoints or names + CLIP checkpoints, embeddings cache."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densevlm_mm.apis import (VocabularyEmbeddings, build_vocabulary_embeddings, classify_regions,
                              inference_dense, init_model, prepare_image)
from densevlm_mm.apis import vocabulary_embeddings as vocab_module

H, W = 96, 160
# three regions of the 96x160 image: top-left, top-right, bottom (x1, y1, x2, y2)
REGIONS = np.array([[0, 0, 80, 48], [80, 0, 160, 48], [0, 48, 160, 96]], dtype=np.float32)
COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220)]


def region_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((H, W, 3), dtype=np.float32)
    for (x0, y0, x1, y1), colour in zip(REGIONS.astype(int), COLOURS):
        img[y0:y1, x0:x1] = colour
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def region_vocabulary(model, image) -> VocabularyEmbeddings:
    """'text' embeddings = the model's own pooled features of the three regions."""
    prepared = prepare_image(model, image)
    sx, sy = prepared.scale_factor
    boxes = torch.from_numpy(REGIONS * np.array([sx, sy, sx, sy], dtype=np.float32))
    with torch.no_grad():
        dense = model.backbone.dense_features(prepared.inputs)
        feats = model.backbone.roi_features(dense, [boxes])
    return VocabularyEmbeddings(['red block', 'green block', 'blue band'],
                                F.normalize(feats, dim=-1))


@pytest.fixture(scope='module', params=['densevlm-tiny-eva02', 'densevlm-tiny-vit'])
def tiny(request):
    torch.manual_seed(0)
    return init_model(request.param, image_size=224)


def test_label_map_names_known_regions(tiny):
    image = region_image()
    vocab = region_vocabulary(tiny, image)
    result = inference_dense(tiny, image, vocab)
    assert result.label_map.shape == (H, W) and result.score_map.shape == (H, W)
    margin = 12  # one feature cell (16 canvas px = 11.4 image px) around region borders
    for k, (x0, y0, x1, y1) in enumerate(REGIONS.astype(int)):
        inner = result.label_map[y0 + margin * (y0 > 0):y1 - margin * (y1 < H),
                                 x0 + margin * (x0 > 0):x1 - margin * (x1 < W)]
        share = (inner == k).mean()
        assert share > 0.95, (vocab.names[k], share)
    areas = result.class_areas()
    assert list(areas) == ['blue band', 'red block', 'green block'] or \
        abs(areas['blue band'] - 0.5) < 0.1
    assert result.similarity.shape[0] == 3 and result.dense.shape[0] == tiny.embed_dim


def test_classify_boxes_and_masks(tiny):
    image = region_image()
    vocab = region_vocabulary(tiny, image)
    res = classify_regions(tiny, image, vocab, boxes=REGIONS)
    assert res.labels.tolist() == [0, 1, 2]
    np.testing.assert_allclose(res.scores, 1.0, atol=1e-5)  # its own feature: cosine 1
    assert res.probs.shape == (3, 3) and np.allclose(res.probs.sum(1), 1)
    masks = np.zeros((3, H, W), dtype=bool)
    for k, (x0, y0, x1, y1) in enumerate(REGIONS.astype(int)):
        masks[k, y0:y1, x0:x1] = True
    assert classify_regions(tiny, image, vocab, masks=masks).labels.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match='outside'):
        classify_regions(tiny, image, vocab, boxes=[[0, 0, W + 5, 10]])
    clipped = classify_regions(tiny, image, vocab, boxes=[[0, 0, W + 5, 10]], clip_boxes=True)
    assert clipped.labels.shape == (1, )
    with pytest.raises(ValueError, match='inverted'):
        classify_regions(tiny, image, vocab, boxes=[[50, 10, 20, 40]])
    with pytest.raises(ValueError, match='empty'):
        classify_regions(tiny, image, vocab, masks=np.zeros((1, H, W), dtype=bool))


def test_rotated_photo_keeps_its_upright_size(tiny, tmp_path):
    from PIL import Image
    im = Image.fromarray(region_image())
    exif = im.getexif()
    exif[0x0112] = 8  # displayed rotated by 90°
    im.save(tmp_path / 'p.jpg', exif=exif)
    vocab = region_vocabulary(tiny, region_image())
    assert inference_dense(tiny, str(tmp_path / 'p.jpg'), vocab).label_map.shape == (W, H)


def test_wrong_embedding_dimension(tiny):
    with pytest.raises(ValueError, match='build_vocabulary_embeddings'):
        inference_dense(tiny, region_image(), torch.randn(3, tiny.embed_dim + 1))


def _save_clip(path, name='densevlm-tiny-vit', seed=1):
    from densevlm_mm.models.clip_factory import create_clip
    torch.manual_seed(seed)
    clip, _ = create_clip(name)
    torch.save(clip.state_dict(), path)
    return clip


def test_text_embeddings_are_cached_by_model_checkpoint_and_names(tmp_path, monkeypatch):
    ckpt = tmp_path / 'clip.pt'
    _save_clip(ckpt)
    model = init_model('densevlm-tiny-vit', str(ckpt), image_size=64)
    cache = tmp_path / 'cache'
    first = build_vocabulary_embeddings(model, ['snow', 'sky'], cache_dir=str(cache))
    assert first.cache_file and os.path.isfile(first.cache_file)
    assert torch.allclose(first.embeddings.norm(dim=-1), torch.ones(2))

    def refuse(*args, **kwargs):
        raise AssertionError('encoded again instead of reading the cache')

    monkeypatch.setattr(vocab_module, 'build_text_embeddings', refuse)
    again = build_vocabulary_embeddings(model, ['snow', 'sky'], cache_dir=str(cache))
    assert again.cache_file == first.cache_file
    assert torch.equal(again.embeddings, first.embeddings)
    with pytest.raises(AssertionError, match='encoded again'):  # other names: another entry
        build_vocabulary_embeddings(model, ['snow', 'skis'], cache_dir=str(cache))
    st = os.stat(ckpt)
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a re-saved checkpoint
    with pytest.raises(AssertionError, match='encoded again'):
        build_vocabulary_embeddings(model, ['snow', 'sky'], cache_dir=str(cache))
    monkeypatch.undo()
    random_model = init_model('densevlm-tiny-vit', image_size=64)
    assert build_vocabulary_embeddings(random_model, ['snow', 'sky'],
                                       cache_dir=str(cache)).cache_file is None


def test_preset_embeddings_have_one_row_per_name(tiny):
    vocab = build_vocabulary_embeddings(tiny, 'ovcoco_17_novel', use_cache=False,
                                        templates=['a photo of a {}.'])  # 1 prompt: fast
    assert vocab.embeddings.shape == (17, tiny.embed_dim) and vocab.source == 'ovcoco_17_novel'
    assert vocab.names[0] == 'airplane' and vocab.is_thing is None
    assert torch.allclose(vocab.embeddings.norm(dim=-1), torch.ones(17))


def test_init_from_config_and_work_dir_checkpoint(demo, tmp_path):
    from densevlm_mm.models.clip_factory import create_clip
    from densevlm_mm.apis.tiny_demo import load_tiny_demo_config
    cfg = load_tiny_demo_config(demo)
    torch.manual_seed(5)
    visual = create_clip('densevlm-tiny-eva02')[0].visual.state_dict()
    work = tmp_path / 'epoch_3.pth'
    torch.save(dict(meta=dict(epoch=3), state_dict={f'backbone.visual.{k}': v
                                                   for k, v in visual.items()}), work)
    model = init_model(cfg, str(work))
    assert model.image_size == 128 and model.model_name == 'densevlm-tiny-eva02'
    got = model.backbone.visual.state_dict()
    assert all(torch.equal(got[k], visual[k]) for k in visual)
    student = torch.load(f'{demo}/checkpoints/student.pt', weights_only=True)
    text = {k: v for k, v in model.clip.state_dict().items() if k.startswith('text.')}
    assert text and all(torch.equal(v, student[k]) for k, v in text.items())
    assert model.text_checkpoint.endswith('student.pt') and model.image_checkpoint == str(work)

    with pytest.raises(ValueError, match='training checkpoint'):
        init_model('densevlm-tiny-eva02', str(work))
    cfg.model.backbone.pretrained = str(tmp_path / 'gone.pt')
    with pytest.raises(FileNotFoundError, match='model.backbone.pretrained'):
        init_model(cfg, str(work))
    torch.save({'state_dict': {'backbone.visual.trunk.nonsense': torch.zeros(1)}},
               tmp_path / 'other.pth')
    with pytest.raises(RuntimeError, match='other.pth'):
        init_model(load_tiny_demo_config(demo), str(tmp_path / 'other.pth'))


def _summary(model):
    """Numbers of ``init_model``'s output on a fixed image: text rows, label-map counts, the
    similarity at one cell and in total, the dense map's size."""
    vocab = build_vocabulary_embeddings(model, ['snow', 'sky', 'person'], use_cache=False,
                                        templates=['a photo of a {}.'])
    res = inference_dense(model, region_image(), vocab)
    return (vocab.embeddings[:, 0].tolist(), np.bincount(res.label_map.ravel(), minlength=3),
            res.similarity[:, 0, 0].tolist(), float(res.similarity.sum()),
            float(res.dense.abs().sum()))


def test_init_model_reads_each_checkpoint_once_with_the_former_outputs(demo, tmp_path,
                                                                       monkeypatch):
    """One read per file (formerly a model-name checkpoint was read twice: once to look for the
    text tower, once to load it) and the outputs pinned from before that change."""
    from densevlm_mm.apis.tiny_demo import load_tiny_demo_config
    from densevlm_mm.models.clip_factory import create_clip
    from densevlm_mm.utils import checkpoint as ckpt_module
    reads = []
    read = ckpt_module.read_checkpoint
    monkeypatch.setattr(ckpt_module, 'read_checkpoint',
                        lambda path, *a, **k: reads.append(str(path)) or read(path, *a, **k))
    torch.manual_seed(1)
    torch.save(create_clip('densevlm-tiny-vit')[0].state_dict(), tmp_path / 'clip.pt')
    text, counts, sim, total, dense = _summary(init_model('densevlm-tiny-vit',
                                                          str(tmp_path / 'clip.pt'),
                                                          image_size=64))
    assert reads == [str(tmp_path / 'clip.pt')]
    np.testing.assert_allclose(text, [-0.05005, 0.01306, -0.038], atol=2e-5)
    assert counts.tolist() == [7871, 4535, 2954]
    np.testing.assert_allclose(sim, [-0.34261, -0.33022, -0.32829], atol=2e-5)
    assert abs(total - -3.318) < 2e-3 and abs(dense - 395.589) < 2e-2

    torch.manual_seed(5)
    visual = create_clip('densevlm-tiny-eva02')[0].visual.state_dict()
    torch.save(dict(meta=dict(epoch=3), state_dict={f'backbone.visual.{k}': v
                                                   for k, v in visual.items()}),
               tmp_path / 'epoch_3.pth')
    reads.clear()
    text, counts, sim, total, dense = _summary(init_model(load_tiny_demo_config(demo),
                                                          str(tmp_path / 'epoch_3.pth')))
    assert reads == [f'{demo}/checkpoints/student.pt', str(tmp_path / 'epoch_3.pth')]
    np.testing.assert_allclose(text, [-0.1049, -0.10936, -0.16789], atol=2e-5)
    assert counts.tolist() == [4847, 6825, 3688]
    np.testing.assert_allclose(sim, [0.08179, 0.03436, 0.12713], atol=2e-5)
    assert abs(total - 14.961) < 2e-3 and abs(dense - 0.267) < 1e-3


def test_random_or_missing_text_towers_are_refused(demo, tmp_path):
    """A random text tower is for the bundled tiny test models only; a config whose
    ``model.backbone.pretrained`` has no text tower is refused (formerly: random, with a
    warning)."""
    from densevlm_mm.apis.tiny_demo import load_tiny_demo_config
    with pytest.raises(ValueError, match='no checkpoint for the text tower.*mean nothing'):
        init_model('ViT-B-16')
    cfg = load_tiny_demo_config(demo)
    cfg.model.backbone.model_name = 'EVA02-B-16'
    cfg.model.backbone.pretrained = None
    with pytest.raises(ValueError, match='EVA02-B-16: no checkpoint for the text tower'):
        init_model(cfg)
    from densevlm_mm.models.clip_factory import create_clip
    visual = create_clip('densevlm-tiny-eva02')[0].visual.state_dict()
    torch.save({f'visual.{k}': v for k, v in visual.items()}, tmp_path / 'tower.pt')
    cfg = load_tiny_demo_config(demo)
    cfg.model.backbone.pretrained = str(tmp_path / 'tower.pt')
    with pytest.raises(ValueError, match='model.backbone.pretrained: .*only an image tower'):
        init_model(cfg)
