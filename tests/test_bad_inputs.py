"""Bad or unusual inputs (issue 10): each gives a clear error naming the input and the fix, a
counted skip, or the right answer — never a silent wrong result.

One test per input kind; the command-line cases (checkpoints of another model, a training set
smaller than a batch, two-process CPU runs, exact resume) are in ``tests/tools/test_train_tool.py``.
Add a case here when a new kind of bad input is found.
"""
import io
import json
import os
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from densevlm_mm.datasets.transforms import (LoadImageSafe, LoadPanopticRegions, PackDenseVLMInputs,
                                             ResizeLongestPad, get_skipped_images)
from densevlm_mm.text_embeddings import TextEmbeddings, load_text_embeddings
from densevlm_mm.utils import register_all_modules
from densevlm_mm.vocabulary import Vocabulary, load_vocabulary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
register_all_modules(init_default_scope=False)


def _png_bytes(array: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, 'PNG', **kw)
    return buf.getvalue()


# ---------------------------------------------------------------------------- vocabularies
@pytest.mark.parametrize('names,flags,match', [
    (['cat', 'dog', 'cat'], [1, 1, 1], r"thing class 'cat' is listed twice \(classes 0 and 2\); "
                                       'remove or rename'),
    (['grass', 'sky', 'Grass'], [0, 0, 0], "stuff class 'Grass' is listed twice"),
    (['cat', ''], [1, 0], "class 1 has an empty name"),
    (['cat', '   '], [1, 0], "class 1 has an empty name"),
    (['cat'], [1], 'at least two classes'),
])
def test_vocabulary_duplicate_empty_or_single_class_is_rejected(tmp_path, names, flags, match):
    path = tmp_path / 'vocab.json'
    path.write_text(json.dumps([dict(name=n, isthing=f) for n, f in zip(names, flags)]))
    with pytest.raises(ValueError, match=match):
        load_vocabulary(str(path))
    with pytest.raises(ValueError, match=match):
        Vocabulary(names, flags)


def test_vocabulary_name_in_both_groups_is_allowed():
    """The reference's 316 list has cupboard / fruit / cradle once as thing and once as stuff."""
    vocab = Vocabulary(['cupboard', 'sky', 'cupboard'], [True, False, False])
    assert vocab.num_things == 1
    assert load_vocabulary('densevlm_316').names.count('cupboard') == 2


def test_json_vocabulary_without_isthing_is_rejected(tmp_path):
    path = tmp_path / 'names_only.json'
    path.write_text(json.dumps([dict(id=1, name='cat'), dict(id=2, name='grass')]))
    with pytest.raises(ValueError, match=r'no "isthing" key in any entry.*Add "isthing": 1'):
        load_vocabulary(str(path))
    names_only = load_vocabulary(str(path), require_split=False)  # e.g. ADE-847 for segmentation
    assert names_only.names == ['cat', 'grass'] and names_only.num_things == 0
    # COCO-Stuff-171 style (things flagged, stuff entries without the key) still loads
    path.write_text(json.dumps([dict(name='cat', isthing=1), dict(name='grass')]))
    assert load_vocabulary(str(path)).is_thing.tolist() == [True, False]


# ---------------------------------------------------------------------------- text embeddings
def test_text_embeddings_of_another_text_tower_are_rejected(tmp_path):
    vocab = Vocabulary(['cat', 'grass'], [True, False])
    path = str(tmp_path / 'emb.pt')
    TextEmbeddings(torch.randn(2, 8), vocab.names, vocab.is_thing, model_name='ViT-B-16').save(path)
    with pytest.raises(ValueError, match=r"emb\.pt' was made with the text tower of 'ViT-B-16', "
                                         r"but it is used with 'EVA02-B-16'.*tools/text_embeddings"
                                         r"\.py EVA02-B-16"):
        load_text_embeddings(path, embed_dim=8, expected_model='EVA02-B-16')
    assert load_text_embeddings(path, expected_model='ViT-B-16').model_name == 'ViT-B-16'


# ---------------------------------------------------------------------------- images
def test_16bit_grayscale_png_loads_with_its_values(tmp_path):
    gray = (np.arange(40 * 60).reshape(40, 60) * 27).astype(np.uint16)  # 0 .. 64773
    path = tmp_path / 'depth16.png'
    path.write_bytes(_png_bytes(gray))
    assert Image.open(path).mode.startswith('I')
    out = LoadImageSafe().transform(dict(img_path=str(path)))
    img = out['img']
    assert img.shape == (40, 60, 3) and img.dtype == np.uint8
    assert (img[..., 0] == img[..., 2]).all()
    np.testing.assert_allclose(img[..., 0], gray / 257.0, atol=0.5 + 1e-9)  # not all white
    assert img.min() == 0 and img.max() == 252


def test_exif_orientation_is_applied(tmp_path):
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :10] = 255  # a white band on the left of the stored pixels
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / 'rotated.jpg'
    im.save(path, 'JPEG', exif=exif.tobytes(), quality=95)
    out = LoadImageSafe().transform(dict(img_path=str(path)))
    assert out['img'].shape == (40, 20, 3) and out['ori_shape'] == (40, 20)
    assert out['img'][:8].mean() > 200 and out['img'][-20:].mean() < 30  # the band is on top
    stored = LoadImageSafe(exif_orientation=False).transform(dict(img_path=str(path)))
    assert stored['img'].shape == (20, 40, 3)


def test_thin_image_is_skipped_and_counted(tmp_path):
    """3000×40 at 512 would be a 512×7 strip (less than one 16-px patch)."""
    thin = tmp_path / 'thin.jpg'
    Image.fromarray(np.full((40, 3000, 3), 128, np.uint8)).save(thin)
    before = get_skipped_images().count
    results = LoadImageSafe().transform(dict(img_path=str(thin)))
    assert ResizeLongestPad(512).transform(results) is None
    skipped = get_skipped_images()
    assert skipped.count == before + 1
    assert 'thin.jpg' in skipped.paths[-1] and '3000x40 becomes 512x7' in skipped.paths[-1]
    # an image folder with one good image trains on the good one only
    from densevlm_mm.datasets import ImageFolderDataset
    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(tmp_path / 'good.jpg')
    ds = ImageFolderDataset(str(tmp_path), pipeline=[dict(type=LoadImageSafe),
                                                      dict(type=ResizeLongestPad, size=512)])
    for _ in range(4):
        assert ds[0]['img_path'].endswith('good.jpg')
    # evaluation samples (with GT regions) are never dropped
    results = LoadImageSafe().transform(dict(img_path=str(thin)))
    results['region_boxes'] = np.array([[0, 0, 100, 40]], np.float32)
    assert ResizeLongestPad(512).transform(results)['valid_hw'] == (7, 512)


# ---------------------------------------------------------------------------- SA-1B shards
def _tar(path, n):
    with tarfile.open(path, 'w') as tar:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(np.full((48, 64, 3), 40 * i, np.uint8)).save(buf, 'JPEG')
            info = tarfile.TarInfo(f'sa_{i}.jpg')
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))


def test_truncated_sa1b_shard_names_the_shard_or_is_a_counted_skip(tmp_path):
    from densevlm_mm.datasets import SA1BShardDataset
    good, cut = str(tmp_path / 'sa_0.tar'), str(tmp_path / 'sa_1.tar')
    _tar(good, 4)
    data = open(good, 'rb').read()
    with open(cut, 'wb') as f:
        f.write(data[:700])  # inside the first image's data
    load = [dict(type=LoadImageSafe)]
    with pytest.raises(RuntimeError, match=r"tar shard '.*sa_1\.tar' is damaged or truncated.*"
                                           r'Download it again'):
        SA1BShardDataset([good, cut], pipeline=load)
    # with the counts given, the damaged rest of the shard is skipped and counted
    before = get_skipped_images().count
    ds = SA1BShardDataset([good, cut], pipeline=load, num_samples={'sa_0.tar': 4, 'sa_1.tar': 4},
                          shuffle=False)
    assert len(list(ds)) == 4
    skipped = get_skipped_images()
    assert skipped.count == before + 1 and 'sa_1.tar: damaged tar shard' in skipped.paths[-1]


def test_sa1b_index_cli_runs_as_a_module(tmp_path):
    """``python -m densevlm_mm.datasets.sa1b index`` failed with 'already registered'."""
    _tar(str(tmp_path / 'sa_7.tar'), 3)
    out = tmp_path / 'index.json'
    proc = subprocess.run([sys.executable, '-m', 'densevlm_mm.datasets.sa1b', 'index',
                           str(tmp_path / 'sa_*.tar'), '-o', str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == {'sa_7.tar': 3}
    assert 'already registered' not in proc.stderr and 'RuntimeWarning' not in proc.stderr
    with open(tmp_path / 'sa_8.tar', 'wb') as f:
        f.write(open(tmp_path / 'sa_7.tar', 'rb').read()[:700])
    proc = subprocess.run([sys.executable, '-m', 'densevlm_mm.datasets.sa1b', 'index',
                           str(tmp_path / 'sa_8.tar'), '-o', str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "sa_8.tar' is damaged or truncated" in proc.stderr
    assert 'Traceback' not in proc.stderr


# ---------------------------------------------------------------------------- evaluation protocol
def test_reference_grid_masks_match_torchvision_tensor_resize():
    """The reference resized float masks with torchvision 0.15 (tensor, bicubic, no antialias)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    from densevlm_mm.datasets.transforms.resize_pad import reference_grid_masks
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 75, 130), bool)
    masks[0, 10:40, 20:90] = True
    masks[1] = rng.random((75, 130)) > 0.7
    masks[2, 70:72, 0:3] = True  # tiny: vanishes on a 32-cell grid
    out = reference_grid_masks(masks, (32, 32))
    for mask, got in zip(masks, out):
        scale = 32 / 130.0
        size = [round(75 * scale), round(130 * scale)]  # ResizeLongest: round(side · 32 / max)
        ref = TF.resize(torch.from_numpy(mask).float()[None], size, InterpolationMode.BICUBIC,
                        antialias=False)
        expect = np.zeros((32, 32), bool)
        expect[:size[0], :size[1]] = (ref[0] > 0).numpy()
        np.testing.assert_array_equal(got, expect)
    assert out[0].any() and not out[2].any()


def _protocol_dataset(root, protocol, **kw):
    from densevlm_mm.datasets import PanopticRegionDataset
    from densevlm_mm.datasets.synthetic_panoptic import write_panoptic_dataset
    h, w = 300, 500
    ids = np.full((h, w), 1, np.int64)  # sky (stuff)
    ids[150:] = 2  # grass (stuff)
    ids[150:250, 100:300] = 3  # person (thing): box [100, 150, 300, 250]
    ids[50:59, 50:59] = 4  # kite, 9x9 px: between the bicubic taps of the 8-cell grid
    cats = [dict(id=1, name='sky', isthing=0), dict(id=2, name='grass', isthing=0),
            dict(id=3, name='person', isthing=1), dict(id=4, name='kite', isthing=1)]
    segs = [dict(id=k, category_id=k) for k in (1, 2, 3, 4)]
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    paths = write_panoptic_dataset(str(root), cats, [dict(image=image, ids=ids, segments=segs)])
    return PanopticRegionDataset(
        ann_file=paths['panoptic_json'], data_prefix=dict(img=paths['img_dir'],
                                                          seg=paths['seg_dir']),
        pipeline=[dict(type=LoadPanopticRegions), dict(type=ResizeLongestPad, size=128),
                  dict(type=PackDenseVLMInputs)], region_protocol=protocol, **kw)


def test_reference_protocol_boxes_masks_and_empty_mask_count(tmp_path):
    from mmengine.evaluator import Evaluator
    with pytest.raises(ValueError, match='give grid_stride'):
        _protocol_dataset(tmp_path / 'a', 'reference')
    ref = _protocol_dataset(tmp_path / 'b', 'reference', grid_stride=16)[0]['data_samples']
    ours = _protocol_dataset(tmp_path / 'c', 'ours')[0]['data_samples']
    labels = ref.region_labels.tolist()  # sorted ids: sky, grass, person, kite
    assert labels == [0, 1, 2, 3] and ours.region_labels.tolist() == labels
    # one isotropic scale 128/500 (ours: per axis, the height rounds to 77 px)
    np.testing.assert_allclose(ref.region_boxes[2].numpy(), [25.6, 38.4, 76.8, 64.0], rtol=1e-6)
    np.testing.assert_allclose(ours.region_boxes[2].numpy(),
                               [25.6, 150 * 77 / 300, 76.8, 250 * 77 / 300], rtol=1e-6)
    # masks at the size of the 8x8 dense grid (128 / 16), 0/1; the 9 px kite vanishes
    assert ref.region_masks.shape == (4, 8, 8) and ref.region_masks.dtype == torch.bool
    assert ref.region_mask_empty.tolist() == [False, False, False, True]
    assert ours.region_masks.shape == (4, 128, 128) and not ours.region_mask_empty.any()
    assert ref.metainfo['region_protocol'] == 'reference'

    # a prediction for the vanished mask is not used: it is scored wrong and counted
    ref.pred_box_topk = torch.tensor([[lab, (lab + 1) % 4] for lab in labels])
    ref.pred_mask_topk = ref.pred_box_topk.clone()
    metric = dict(type='densevlm_mm.RegionClassificationMetric', topk=(1, 2),
                  out_file=str(tmp_path / 'res.json'))
    evaluator = Evaluator([metric])
    evaluator.dataset_meta = dict(classes=('sky', 'grass', 'person', 'kite'),
                                  is_thing=[False, False, True, True], region_protocol='reference')
    evaluator.process([ref])
    res = evaluator.evaluate(1)
    assert res['boxes.top1'] == 100.0 and res['masks_stuff.top1'] == 100.0
    assert res['masks_thing.top1'] == 50.0 and res['masks_thing.empty'] == 1
    saved = json.loads((tmp_path / 'res.json').read_text())
    assert saved['region_protocol'] == 'reference' and saved['reference_rounding'] is True
    assert saved['empty_masks'] == {'masks_thing': 1, 'masks_stuff': 0}


def test_reference_protocol_masks_are_pooled_with_0_1_weights():
    """Grid-sized masks reach ``mask_features`` as weights as they are (no area coverage)."""
    from densevlm_mm.models import DenseVLMBackbone
    backbone = DenseVLMBackbone(model_name='densevlm-tiny-vit').eval()
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        dense = backbone.dense_features(images)
        assert dense.shape[-2:] == (128 // backbone.stride, ) * 2
        mask = torch.zeros(1, *dense.shape[-2:], dtype=torch.bool)
        mask[0, 1:4, 2:7] = True
        pooled = backbone.mask_features(dense, [mask])
    normed = torch.nn.functional.normalize(dense[0], dim=0)
    torch.testing.assert_close(pooled[0], normed[:, mask[0]].mean(dim=1))


def test_reference_protocol_config_per_backbone():
    import glob

    import open_clip
    from mmengine.config import Config
    plain = sorted(p for p in glob.glob(os.path.join(REPO, 'configs', 'region_cls', '*.py'))
                   if not p.endswith('_reference-protocol.py'))
    assert plain
    for path in plain:
        ref_path = path[:-3] + '_reference-protocol.py'
        assert os.path.isfile(ref_path), f'no reference-protocol config for {path}'
        cfg = Config.fromfile(ref_path)
        assert f"_base_ = ['./{os.path.basename(path)}']" in open(ref_path).read()
        name = cfg.model.backbone.model_name  # ViT-B-16, EVA02-L-14-336: the patch size
        patch = re.search(r'-[BLHg]-(\d+)', name)
        stride = int(patch.group(1)) if patch else 32  # RN50x4 / ConvNeXt: 32 px per cell
        assert open_clip.get_model_config(name) is not None, name
        for loader in (cfg.test_dataloader, cfg.val_dataloader):
            assert loader.dataset.region_protocol == 'reference'
            assert loader.dataset.grid_stride == stride, ref_path
