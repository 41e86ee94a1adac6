"""Bad or unusual inputs (issue 10): each gives a clear error naming the input and the fix, a
counted skip, or the right answer — never a silent wrong result.

One test per input kind; the command-line cases (checkpoints of another model, a training set
smaller than a batch, two-process CPU runs, exact resume) are in ``tests/tools/test_train_tool.py``,
those of ``--cfg-options``, work dirs and the converters (issue 23) in
``tests/test_bad_inputs_tools.py``, bad hyper-parameters in ``tests/test_bad_inputs_method.py``.
Add a case here when a new kind of bad input is found; ``docs/en/faq.md`` lists the messages.
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


# ---------------------------------------------------------------------------- annotations (issue 23)
def _two_segment_panoptic(root, listed, **kw):
    """A 40x60 panoptic image with segments 1 (sky, top) and 2 (person, 10x20 box) in its PNG;
    ``listed``: the segment ids its json lists."""
    from densevlm_mm.datasets import PanopticRegionDataset
    from densevlm_mm.datasets.synthetic_panoptic import write_panoptic_dataset
    ids = np.ones((40, 60), np.int64)
    ids[20:30, 10:30] = 2
    cats = [dict(id=1, name='sky', isthing=0), dict(id=3, name='person', isthing=1)]
    segs = [dict(id=k, category_id=c) for k, c in ((1, 1), (2, 3)) if k in listed]
    image = np.zeros((40, 60, 3), np.uint8)
    paths = write_panoptic_dataset(str(root), cats, [dict(image=image, ids=ids, segments=segs,
                                                          image_id=7)])
    return paths, PanopticRegionDataset(
        ann_file=paths['panoptic_json'], data_prefix=dict(img=paths['img_dir'],
                                                          seg=paths['seg_dir']),
        pipeline=[dict(type=LoadPanopticRegions, min_size=1, **kw)])


def test_panoptic_png_ids_missing_from_the_json_are_refused(tmp_path):
    """COCO's panopticapi refuses them; they were left unlabelled without a word."""
    _, ds = _two_segment_panoptic(tmp_path / 'a', listed=(1, ))
    with pytest.raises(ValueError, match=r"panoptic PNG '.*000000\.png' \(image id 7\) has segment "
                                         r"ids that its segments_info does not list: 2 \(200 px\)\."
                                         r'.*check_png_ids=False'):
        ds[0]
    _, ds = _two_segment_panoptic(tmp_path / 'b', listed=(1, ), check_png_ids=False)
    assert ds[0]['region_labels'].tolist() == [0]  # the reference's behaviour, on request
    _, ds = _two_segment_panoptic(tmp_path / 'c', listed=(1, 2))
    assert ds[0]['region_labels'].tolist() == [0, 1]
    # a segment listed twice in one image is refused when the json is read
    paths, _ = _two_segment_panoptic(tmp_path / 'd', listed=(1, 2))
    data = json.loads(open(paths['panoptic_json']).read())
    data['annotations'][0]['segments_info'].append(data['annotations'][0]['segments_info'][0])
    open(paths['panoptic_json'], 'w').write(json.dumps(data))
    from densevlm_mm.datasets import PanopticRegionDataset
    with pytest.raises(ValueError, match='segment id 1 is listed twice in the segments_info of '
                                         'image 7'):
        PanopticRegionDataset(ann_file=paths['panoptic_json'], pipeline=[])


def test_detection_category_ids_outside_the_file_categories_are_refused(tmp_path):
    from mmengine.logging import MMLogger

    from densevlm_mm.datasets.ov_detection import OVCocoDataset
    from densevlm_mm.datasets.synthetic_detection import make_synthetic_detection
    fx = make_synthetic_detection(str(tmp_path / 'det'), num_train=2, num_val=1)
    args = dict(data_prefix=dict(img=fx['train_img'] + '/'), classes=fx['classes'],
                base_classes=fx['base_classes'], novel_classes=fx['novel_classes'], pipeline=[])
    data = json.loads(open(fx['train_ann']).read())
    data['annotations'][0]['category_id'] = 999
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(data))
    first = data['annotations'][0]
    with pytest.raises(ValueError, match=rf"annotation {first['id']} of image {first['image_id']}"
                                         r" has category_id 999, which the file's \"categories\" "
                                         r'do not list \(1 such annotations.*check_categories=False'):
        OVCocoDataset(ann_file=str(bad), **args)
    # mmdet's behaviour on request: skipped, and counted in the log
    ds = OVCocoDataset(ann_file=str(bad), check_categories=False, **args)
    boxes = sum(len(ds.get_data_info(i)['instances']) for i in range(len(ds)))
    assert boxes == len(data['annotations']) - 1
    # a category of the file that `classes` leaves out (COCO's 80 vs OV-COCO's 65) is a counted
    # skip: mmdet drops those boxes, the log says how many
    data = json.loads(open(fx['train_ann']).read())
    data['categories'].append(dict(id=500, name='kite', supercategory='thing'))
    data['annotations'][0]['category_id'] = 500
    extra = tmp_path / 'extra.json'
    extra.write_text(json.dumps(data))
    logged = []
    logger = MMLogger.get_current_instance()
    handler = __import__('logging').Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logger.addHandler(handler)
    try:
        ds = OVCocoDataset(ann_file=str(extra), **args)
    finally:
        logger.removeHandler(handler)
    assert any("1 annotations of 1 categories of" in m and "kite (1)" in m for m in logged)
    boxes = sum(len(ds.get_data_info(i)['instances']) for i in range(len(ds)))
    assert boxes == len(data['annotations']) - 1


def _png(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def test_segmentation_label_maps_are_checked_when_loaded(tmp_path):
    """Values outside the classes (IoUMetric dropped them silently), another size than the image,
    three channels, 16-bit values in the 8-bit loader: each names the file."""
    from densevlm_mm.datasets.transforms import LoadCheckedSegAnnotations

    def load(array, reduce=False, **kw):
        path = _png(tmp_path / 'm.png', array)
        return LoadCheckedSegAnnotations(**kw)(dict(seg_map_path=path, ori_shape=(4, 6),
                                                    reduce_zero_label=reduce, seg_fields=[]))

    good = np.array([[0, 1, 2, 255, 0, 0]] * 4, np.uint8)
    out = load(good, num_classes=3)
    np.testing.assert_array_equal(out['gt_seg_map'], good)
    assert out['seg_fields'] == ['gt_seg_map']
    bad = good.copy()
    bad[0, :2] = 7
    with pytest.raises(ValueError, match=r"label map '.*m\.png' has label values outside the 3 "
                                         r'classes: 7 \(2 px\); allowed are 0\.\.2 and 255 '
                                         r'\(ignore\)\. The map belongs'):
        load(bad, num_classes=3)
    np.testing.assert_array_equal(load(bad, num_classes=3, check_labels=False)['gt_seg_map'], bad)
    # reduce_zero_label (ADE-150): file 0 -> 255, v -> v-1; file 4 is label 3, outside 3 classes
    raw = np.array([[0, 1, 3, 4, 255, 2]] * 4, np.uint8)
    with pytest.raises(ValueError, match=r'3 \(4 px\); allowed are 0\.\.2 and 255 \(ignore\) after '
                                         "the dataset's reduce_zero_label"):
        load(raw, reduce=True, num_classes=3)
    np.testing.assert_array_equal(load(raw, reduce=True, num_classes=4)['gt_seg_map'][0],
                                  [255, 0, 2, 3, 255, 1])
    with pytest.raises(ValueError, match=r"m\.png' is 5x4 but its image is 6x4"):
        load(np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(4, 6, 3\).*single-channel"):
        load(np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(ValueError, match='values up to 256: a 16-bit map.*LoadWideSegAnnotations'):
        load(np.full((4, 6), 256, np.uint16))
    np.testing.assert_array_equal(load(np.full((4, 6), 255, np.uint16))['gt_seg_map'], 255)
    # the wide loader (ADE-847 / PC-459): labels below num_classes or 65535
    from densevlm_mm.datasets.seg_datasets import LoadWideSegAnnotations
    wide = np.array([[0, 846, 847, 65535, 0, 0]] * 4, np.uint16)
    results = dict(seg_map_path=_png(tmp_path / 'w.png', wide), ori_shape=(4, 6))
    with pytest.raises(ValueError, match=r'847 \(4 px\); allowed are 0\.\.846 and 65535'):
        LoadWideSegAnnotations(num_classes=847)(dict(results))
    assert LoadWideSegAnnotations()(dict(results))['gt_seg_map'][0, 2] == 847


def test_segmentation_configs_check_labels_against_their_dataset():
    """Each segmentation dataset base config loads its maps with the checks and the dataset's
    class count."""
    import glob

    from mmengine.config import Config
    from mmseg.registry import DATASETS as SEG_DATASETS

    from densevlm_mm.registry import DATASETS
    register_all_modules(init_default_scope=False)
    import mmseg.datasets  # noqa: F401
    import densevlm_mm.datasets.seg_datasets  # noqa: F401
    found = 0
    for path in sorted(glob.glob(os.path.join(REPO, 'configs', '_base_', 'datasets', 'seg_*.py'))):
        cfg = Config.fromfile(path)
        loaders = [cfg.val_dataloader] + ([cfg.train_dataloader] if 'train_dataloader' in cfg
                                          else [])
        for loader in loaders:
            step = next(t for t in loader.dataset.pipeline if 'Seg' in t['type'] and 'Load' in
                        t['type'])
            assert step['type'] in ('densevlm_mm.LoadCheckedSegAnnotations',
                                    'densevlm_mm.LoadWideSegAnnotations'), path
            name = loader.dataset.type
            cls = DATASETS.get(name.split('.')[-1]) if name.startswith('densevlm_mm.') else \
                SEG_DATASETS.get(name)
            classes = cls.METAINFO.get('classes') if 'classes' in cls.METAINFO else None
            expected = len(classes) if classes else 459  # PC-459 reads labels.txt
            assert step['num_classes'] == expected, path
            found += 1
    assert found == 6  # 5 validation sets + the COCO-Stuff training set


@pytest.mark.parametrize('content,match', [
    (b'', r"is empty \(0 bytes\).*Write or download it again"),
    (b'{"images": [', r'is not valid JSON: .* at line 1 column 13; the file may be truncated'),
    (b'\xff\xfe' + '{"images": []}'.encode('utf-16-le'), r'lists no "images"'),  # decoded
])
def test_empty_or_truncated_annotation_files_are_named(tmp_path, content, match):
    from densevlm_mm.datasets import CocoImageDataset, PanopticRegionDataset
    from densevlm_mm.datasets.ov_detection import OVCocoDataset
    ann = tmp_path / 'ann.json'
    ann.write_bytes(content)
    (tmp_path / 'img').mkdir()
    with pytest.raises(ValueError, match=match) as err:
        CocoImageDataset(ann_file=str(ann), data_prefix=dict(img=str(tmp_path / 'img')))
    assert 'ann.json' in str(err.value)
    if content.startswith(b'\xff'):
        return
    with pytest.raises(ValueError, match=match):
        PanopticRegionDataset(ann_file=str(ann), pipeline=[])
    with pytest.raises(ValueError, match=r"annotation file '.*ann\.json'"):
        OVCocoDataset(ann_file=str(ann), pipeline=[])
    with pytest.raises(ValueError, match=match):
        load_vocabulary(str(ann))


# ---------------------------------------------------------------------------- vocabularies (23)
def test_vocabulary_files_are_decoded_by_their_byte_order_mark(tmp_path):
    """Notepad's "Unicode" (UTF-16 with BOM) and "UTF-8 with BOM" files; Latin-1 / BOM-less UTF-16
    are refused naming the file."""
    text = 'thing\tcafé chair\nstuff\tsky\n'
    for encoding, bom in (('utf-16-le', b'\xff\xfe'), ('utf-16-be', b'\xfe\xff'),
                          ('utf-8', b'\xef\xbb\xbf'), ('utf-32-le', b'\xff\xfe\x00\x00')):
        path = tmp_path / f'v_{encoding}.txt'
        path.write_bytes(bom + text.encode(encoding))
        vocab = load_vocabulary(str(path))
        assert vocab.names == ['café chair', 'sky'] and vocab.is_thing.tolist() == [True, False]
    js = tmp_path / 'v.json'
    js.write_bytes(b'\xef\xbb\xbf' + json.dumps([dict(name='cat', isthing=1),
                                                 dict(name='sky', isthing=0)]).encode())
    assert load_vocabulary(str(js)).names == ['cat', 'sky']  # json.load refused the UTF-8 BOM
    latin = tmp_path / 'latin1.txt'
    latin.write_bytes(text.encode('latin-1'))
    with pytest.raises(ValueError, match=r"vocabulary '.*latin1\.txt' is not UTF-8 \(byte 9: "
                                         r".*save it as UTF-8"):
        load_vocabulary(str(latin))
    no_bom = tmp_path / 'nobom.txt'
    no_bom.write_bytes(text.encode('utf-16-le'))
    with pytest.raises(ValueError, match='contains NUL bytes: it looks like UTF-16 or UTF-32 saved '
                                         'without a byte-order mark'):
        load_vocabulary(str(no_bom))
    # the other class-list readers: PASCAL-Context labels.txt, detection class lists
    from densevlm_mm.datasets.ov_detection import read_class_list
    from densevlm_mm.datasets.seg_datasets import read_class_names
    labels = tmp_path / 'labels.txt'
    labels.write_bytes(b'\xff\xfe' + '1: café\n2: sky\n'.encode('utf-16-le'))
    assert read_class_names(str(labels)) == ['café', 'sky']
    names = tmp_path / 'names.json'
    names.write_bytes(b'\xff\xfe' + json.dumps(['cat', 'dog']).encode('utf-16-le'))
    assert read_class_list(str(names)) == ['cat', 'dog']
    empty = tmp_path / 'blank.txt'
    empty.write_text('\n  \n')
    with pytest.raises(ValueError, match=r"vocabulary '.*blank\.txt' has only blank lines"):
        load_vocabulary(str(empty))
    with pytest.raises(FileNotFoundError, match=r"vocabulary file not found: 'data/names\.txt'"):
        load_vocabulary('data/names.txt')


def test_class_names_cut_at_the_text_context_are_reported_or_refused(monkeypatch):
    """Names longer than the text tower's 77 tokens lose their end; two that then give identical
    tokens would get identical embeddings."""
    from densevlm_mm.models.clip_factory import create_clip
    from densevlm_mm.text_embeddings import PromptLengthCheck, build_text_embeddings
    model, tokenizer = create_clip('densevlm-tiny-vit')
    model.eval()
    long = 'a ' + 'very ' * 80
    with pytest.raises(ValueError, match=r"class names 'a very very very very very very very ver"
                                         r"\.\.\.y very very very dog' and '.*very cat' give "
                                         r"identical "
                                         r'prompts after the tokenizer cut them at the text '
                                         r"tower's context length \(77 tokens\)"):
        build_text_embeddings(model, tokenizer, ['sky', long + 'dog', long + 'cat'])
    logged = []
    monkeypatch.setattr('mmengine.logging.print_log', lambda msg, **kw: logged.append(msg))
    emb = build_text_embeddings(model, tokenizer, ['sky', long + 'dog', 'cupboard', 'Cupboard'])
    assert emb.shape == (4, 32)
    torch.testing.assert_close(emb[2], emb[3])  # the same name twice (thing / stuff) is allowed
    assert len(logged) == 1 and logged[0].startswith(
        "1 class name(s) too long for the text tower's context (77 tokens)")
    # exactly full (77 tokens with start and end) is not cut; one more token is
    fits = 'cat ' * 75
    assert len(tokenizer.encode(fits)) + 2 == 77
    cut = []
    for name in (fits, fits + 'dog'):
        check = PromptLengthCheck(tokenizer)
        check.add(name, [name], tokenizer([name]))
        cut += check.cut
    assert cut == [fits + 'dog']


def test_demo_refuses_an_empty_or_missing_custom_vocabulary(tmp_path):
    """``--custom-vocabulary ""`` fell back to COCO's classes; a missing names.txt was read as one
    class name."""
    from conftest import load_tool
    demo = load_tool('demo.py')
    img = _png(tmp_path / 'x.png', np.zeros((8, 8, 3), np.uint8))
    base = [img, '--model', 'densevlm-tiny-vit', '--out', str(tmp_path / 'o')]
    with pytest.raises(SystemExit, match='--custom-vocabulary is empty'):
        demo.main(base + ['--custom-vocabulary', ' , '])
    with pytest.raises(SystemExit, match=r"--custom-vocabulary 'lists/names\.txt' looks like a file "
                                         'path, but there is no such file'):
        demo.main(base + ['--custom-vocabulary', 'lists/names.txt'])
    utf16 = tmp_path / 'names.txt'
    utf16.write_bytes(b'\xff\xfe' + 'snow\nsky\n'.encode('utf-16-le'))
    assert demo.read_custom_vocabulary(str(utf16)) == ['snow', 'sky']
    assert demo.read_custom_vocabulary('snow, sky') == ['snow', 'sky']
    with pytest.raises(SystemExit, match='--cfg-options changes the settings of --config'):
        demo.main(base + ['--cfg-options', 'model.x=1'])


def test_class_lists_are_compared_with_one_message():
    """One format names the first differing class of two lists (it was written three ways)."""
    from densevlm_mm.vocabulary import check_same_classes, first_difference
    assert first_difference(['a', 'b'], ['a', 'b']) is None
    assert first_difference(['a', 'b'], ['a']) == 1 and first_difference(['x'], ['y', 'z']) == 0
    check_same_classes(None, ['a'], 'x', 'y', 'fix')  # nothing to compare
    with pytest.raises(ValueError, match=r"^class 0 is 'x' in A but 'y' in B \(1 classes in A, 1 "
                                         r'in B\); fix$'):
        check_same_classes(['x'], ['y'], 'A', 'B', 'fix')
    with pytest.raises(ValueError) as err:
        check_same_classes(['a', 'b'], ['a', 'b', 'c'], 'the file', 'the dataset', 'Fix it.',
                           where="'f.pt'")
    assert str(err.value) == ("'f.pt': class 2 is missing in the file but 'c' in the dataset (2 "
                              'classes in the file, 3 in the dataset); Fix it.')


def test_lvis_categories_differing_from_the_classes_name_the_first_one(tmp_path):
    pytest.importorskip('lvis', reason='OV-LVIS needs the lvis package (pinned lvis==0.5.3)')
    from densevlm_mm.datasets.ov_detection import OVLVISDataset, read_class_list
    names = read_class_list('ovlvis_1203_all')
    cats = [dict(id=i + 1, name=n, frequency='f', synset=n, image_count=1, instance_count=1)
            for i, n in enumerate(names)]
    cats[5]['name'] = 'renamed'
    data = dict(images=[dict(id=1, coco_url='http://x/train2017/1.jpg', height=64, width=64,
                             neg_category_ids=[], not_exhaustive_category_ids=[])],
                annotations=[dict(id=1, image_id=1, category_id=2, bbox=[1, 1, 9, 9], area=81,
                                  segmentation=[[1, 1, 9, 1, 9, 9]])], categories=cats)
    ann = tmp_path / 'lvis.json'
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"lvis\.json': class 5 is 'renamed' in its categories "
                                         rf"\(by id\) but {names[5]!r} in `classes` \(1203 classes"):
        OVLVISDataset(ann_file=str(ann), data_prefix=dict(img=''), pipeline=[])
    cats[5]['name'] = names[5]
    data['annotations'][0]['category_id'] = 5000
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match='annotation 1 of image 1 has category_id 5000'):
        OVLVISDataset(ann_file=str(ann), data_prefix=dict(img=''), pipeline=[])


class _WordTokenizer:
    """open_clip's tokenizer interface on words: start 1, end 2, word ids from 3, zero padding,
    the end token at the last place of a cut sequence; counts its ``encode`` calls."""
    context_length = 6

    def __init__(self):
        self.ids, self.encoded = {}, 0

    def encode(self, text):
        self.encoded += 1
        return [self.ids.setdefault(w, len(self.ids) + 3) for w in text.split()]

    def __call__(self, texts):
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [1] + [self.ids.setdefault(w, len(self.ids) + 3) for w in text.split()] + [2]
            ids = ids[:self.context_length]
            ids[-1] = 2
            out[row, :len(ids)] = torch.tensor(ids)
        return out


def test_prompt_length_check_counts_only_cut_prompts(monkeypatch):
    from densevlm_mm.text_embeddings import PromptLengthCheck, _short
    tok = _WordTokenizer()
    check = PromptLengthCheck(tok)
    # with start and end: 2 and 3 words leave room, 4 fill the context exactly, 5 are cut
    for name in ('a b', 'a b c', 'a b c x', 'a b c d e'):
        check.add(name, [name], tok([name]))
    with pytest.raises(ValueError, match=r"class names 'a b c d e' and 'a b c d f' give identical "
                                         r'prompts .* \(6 tokens\)'):
        check.add('a b c d f', ['a b c d f'], tok(['a b c d f']))
    assert check.cut == ['a b c d e', 'a b c d f']
    assert tok.encoded == 3  # only the prompts that fill the context are encoded again
    same = PromptLengthCheck(tok)  # equal up to clean_name: one class as thing and as stuff
    for name in ('A_b c d e', 'a b c d e'):
        same.add(name, [name], tok([name.replace('_', ' ').lower()]))
    # a tokenizer without `encode` or without a context length: no length check, no error
    for bare in (lambda texts: tok(texts), type('T', (), dict(encode=tok.encode,
                                                              context_length=None))()):
        other = PromptLengthCheck(bare)
        other.add('a b c d e', ['a b c d e'], tok(['a b c d e']))
        assert other.cut == []
    logged = []
    monkeypatch.setattr('mmengine.logging.print_log', lambda msg, **kw: logged.append(msg))
    many = PromptLengthCheck(tok)
    for k in range(6):
        name = f'w{k} x y z q'
        many.add(name, [name], tok([name]))
    many.report()
    assert logged == ["6 class name(s) too long for the text tower's context (6 tokens): their "
                      "prompts are cut, and the end of the name is not encoded: 'w0 x y z q', "
                      "'w1 x y z q', 'w2 x y z q', 'w3 x y z q', 'w4 x y z q' .... Shorten them."]
    PromptLengthCheck(tok).report()  # nothing cut: nothing logged
    assert len(logged) == 1
    # long names are shown with their middle elided (40 + ... + 20 characters)
    assert _short('n' * 63) == repr('n' * 63) and _short('cat') == "'cat'"
    assert _short('h' * 40 + 'm' * 4 + 't' * 20) == repr('h' * 40 + '...' + 't' * 20)


@pytest.mark.parametrize('value,path_like', [
    ('names.txt', True), ('NAMES.TXT', True), ('v.json', True), ('data/x', True),
    ('snow', False), ('a,b.txt', False), ('x/y,z', False), ('snow, sky', False),
])
def test_path_like_vocabulary_values(monkeypatch, value, path_like):
    from densevlm_mm.vocabulary import looks_like_path
    assert looks_like_path(value) is path_like
    monkeypatch.setattr(os, 'sep', '\\')  # Windows: '/' and the native separator both count
    assert looks_like_path(value) is path_like
    assert looks_like_path(value.replace('/', '\\')) is path_like


def test_file_messages_name_what_the_file_is_for(tmp_path):
    from densevlm_mm.text_embeddings import generate_text_embedding_file
    empty = tmp_path / 'v.json'
    empty.write_bytes(b'')
    with pytest.raises(ValueError, match=r"^vocabulary '.*v\.json' is empty \(0 bytes\)"):
        load_vocabulary(str(empty))
    vocab = tmp_path / 'ok.txt'
    vocab.write_text('thing\tcat\nstuff\tsky\n')
    templates = tmp_path / 't.txt'
    templates.write_bytes(b'')
    with pytest.raises(ValueError, match=r"^templates file '.*t\.txt' is empty"):
        generate_text_embedding_file('densevlm-tiny-vit', None, str(vocab), str(tmp_path / 'o.pt'),
                                     templates=str(templates), progress=False)
    templates.write_bytes(b'\xff\xfe' + 'a photo of a {}.\nno placeholder\n'.encode('utf-16-le'))
    te = generate_text_embedding_file('densevlm-tiny-vit', None, str(vocab),
                                      str(tmp_path / 'o.pt'), templates=str(templates),
                                      progress=False)
    assert te.templates == ['a photo of a {}.']


def test_embedding_file_class_mismatch_messages(tmp_path):
    path = str(tmp_path / 'e.pt')
    TextEmbeddings(torch.randn(2, 8), ['cat', 'dog'], torch.tensor([True, True])).save(path)
    with pytest.raises(ValueError) as err:
        load_text_embeddings(path, vocabulary=Vocabulary(['cat', 'wolf'], [True, True]))
    assert str(err.value) == (f"{path!r}: class 1 is 'dog' in the file but 'wolf' in the "
                              'vocabulary (2 classes in the file, 2 in the vocabulary); the order '
                              'matters: regenerate the embeddings for this vocabulary.')
    with pytest.raises(ValueError) as err:
        load_text_embeddings(path, class_names=['cat', 'wolf'])
    assert str(err.value) == (f"{path!r}: class 1 is 'dog' in the file but 'wolf' in the dataset "
                              "(2 classes in the file, 2 in the dataset); the rows must follow the "
                              "dataset's category order.")


def test_panoptic_png_id_message_lists_five_ids():
    ids = np.repeat(np.arange(1, 8), 3).reshape(7, 3)  # ids 1..7, 3 px each
    with pytest.raises(ValueError, match=r"has segment ids that its segments_info does not list: "
                                         r'2 \(3 px\), 3 \(3 px\), 4 \(3 px\), 5 \(3 px\), '
                                         r'6 \(3 px\) \.\.\.\. The PNG'):
        LoadPanopticRegions._check_png_ids(ids, dict(segments_info=[dict(id=1)], img_id=3), 'p')
    LoadPanopticRegions._check_png_ids(np.zeros((2, 2), np.int64), dict(segments_info=[]), 'p')


def test_checked_seg_loader_arguments_label_map_and_palette_maps(tmp_path):
    from densevlm_mm.datasets.transforms import LoadCheckedSegAnnotations, check_label_map
    for bad in (0, True, 2.5, '3'):
        with pytest.raises(ValueError, match=r'num_classes must be a positive integer \(the '
                                             rf"dataset's class count\), got {re.escape(repr(bad))}"):
            LoadCheckedSegAnnotations(num_classes=bad)
    assert LoadCheckedSegAnnotations(num_classes=1).num_classes == 1
    t = LoadCheckedSegAnnotations(num_classes=3)
    assert repr(t) == ('LoadCheckedSegAnnotations(num_classes=3, ignore_index=255, '
                       'reduce_zero_label=None, check_labels=True)')
    # a palette ("P") PNG loads as its indices (pillow), as mmseg's loader does
    pal = Image.fromarray(np.array([[0, 1, 2, 255]] * 2, np.uint8), mode='P')
    pal.putpalette([v for i in range(256) for v in (i, 255 - i, 7)])
    pal.save(tmp_path / 'p.png')
    out = t(dict(seg_map_path=str(tmp_path / 'p.png')))  # no ori_shape, no seg_fields yet
    np.testing.assert_array_equal(out['gt_seg_map'], [[0, 1, 2, 255]] * 2)
    assert out['gt_seg_map'].dtype == np.uint8 and out['seg_fields'] == ['gt_seg_map']
    # the transform's reduce_zero_label must agree with the dataset's
    raw = _png(tmp_path / 'r.png', np.array([[0, 1, 4, 255]] * 2, np.uint8))
    with pytest.raises(ValueError, match=r'reduce_zero_label=True but the dataset has '
                                         r'reduce_zero_label=False; remove it'):
        LoadCheckedSegAnnotations(reduce_zero_label=True)(dict(seg_map_path=raw,
                                                               reduce_zero_label=False))
    with pytest.raises(ValueError, match=r"3 \(2 px\); allowed are 0\.\.2 and 255 \(ignore\) after "
                                         r"the transform's reduce_zero_label \(file value v is "
                                         r'label v - 1, 0 is ignore\)\. The map'):
        LoadCheckedSegAnnotations(num_classes=3, reduce_zero_label=True)(dict(seg_map_path=raw))
    agreed = LoadCheckedSegAnnotations(num_classes=4, reduce_zero_label=True)(
        dict(seg_map_path=raw, reduce_zero_label=True))
    np.testing.assert_array_equal(agreed['gt_seg_map'][0], [255, 0, 3, 255])
    with pytest.raises(ValueError, match=r"after the dataset's reduce_zero_label \(file value v is "
                                         r"label v - 1, 0 is ignore\) after the dataset's "
                                         r'label_map\. The map'):
        LoadCheckedSegAnnotations(num_classes=3)(dict(seg_map_path=raw, reduce_zero_label=True,
                                                      label_map={0: 5}))
    # another ignore value
    seven = _png(tmp_path / 's.png', np.array([[0, 7, 255]] * 2, np.uint8))
    with pytest.raises(ValueError, match=r'255 \(2 px\); allowed are 0\.\.2 and 7 \(ignore\)'):
        LoadCheckedSegAnnotations(num_classes=3, ignore_index=7)(dict(seg_map_path=seven))
    # the file is read with the transform's backend_args
    from mmengine.fileio import register_backend
    from mmengine.fileio.backends import BaseStorageBackend

    class Fixed(BaseStorageBackend):
        def get(self, filepath):
            return open(raw, 'rb').read()

        def get_text(self, filepath, encoding='utf-8'):
            raise NotImplementedError

    register_backend('densevlm_test_fixed', Fixed, force=True)
    out = LoadCheckedSegAnnotations(backend_args=dict(backend='densevlm_test_fixed'))(
        dict(seg_map_path='no/such/file.png'))
    np.testing.assert_array_equal(out['gt_seg_map'][0], [0, 1, 4, 255])
    # the dataset's label_map (mmseg's custom classes) applies before the check
    out = LoadCheckedSegAnnotations(num_classes=5)(dict(seg_map_path=raw, label_map={4: 1, 1: 4}))
    np.testing.assert_array_equal(out['gt_seg_map'][0], [0, 4, 1, 255])  # from the old values
    with pytest.raises(ValueError, match=r"4 \(2 px\); .* after the dataset's label_map\. The"):
        LoadCheckedSegAnnotations(num_classes=4)(dict(seg_map_path=raw, label_map={4: 1, 1: 4}))
    # more than five bad values: five shown, then "..."
    many = np.arange(10, 16, dtype=np.uint8)[None]
    with pytest.raises(ValueError, match=r'10 \(1 px\), 11 \(1 px\), 12 \(1 px\), 13 \(1 px\), '
                                         r'14 \(1 px\) \.\.\.; allowed'):
        check_label_map(many, 'm', num_classes=3)
    check_label_map(many, 'm', image_shape=None, num_classes=None)  # no value check asked
    check_label_map(np.full((1, 6), 255, np.uint8), 'm', (1, 6, 3), num_classes=3)  # H, W, C


def test_pseudo_region_category_outside_the_file_categories_is_named(tmp_path):
    """A raw KeyError (no file, no image) before."""
    from densevlm_mm.datasets import CocoPseudoRegionDataset
    (tmp_path / 'img').mkdir()
    ann = tmp_path / 'pseudo.json'
    ann.write_text(json.dumps(dict(
        images=[dict(id=4, file_name='a.jpg', height=8, width=8)], categories=[dict(id=1)],
        annotations=[dict(id=9, image_id=4, category_id=1, bbox=[0, 0, 2, 2]),
                     dict(id=10, image_id=4, category_id=7, bbox=[0, 0, 2, 2])])))
    with pytest.raises(ValueError, match=r"pseudo\.json': annotation 10 of image 4 has category_id "
                                         r"7, which the file's \"categories\" do not list"):
        CocoPseudoRegionDataset(ann_file=str(ann), data_prefix=dict(img=str(tmp_path / 'img')))
