"""Edge values found by mutation testing (``tools/mutation.py``): each test here kills mutants
that survived the rest of the suite (named in the comments), by checking a value the other tests
did not pin."""
import numpy as np
import pytest
import torch

from densevlm_mm.evaluation.functional import (mean_class_accuracy, per_class_accuracy,
                                               topk_indices)


# ------------------------------------------------------------------ evaluation/functional.py
def test_float64_tensor_scores_keep_their_precision():
    # _to_numpy: only non-fp64 floats are converted to fp32 (`and`, not `or`)
    scores = torch.tensor([[1.0, 1.0 + 1e-12, 0.0]], dtype=torch.float64)
    assert topk_indices(scores, 1).tolist() == [[1]]  # fp32 would tie and pick class 0
    assert mean_class_accuracy(scores, torch.tensor([1]), topk=1)['top1'] == 100.0


def test_integer_tensor_is_read_as_topk_indices():
    # _to_numpy must not turn an integer tensor into floats (it would be read as scores)
    top = torch.tensor([[2, 0], [1, 2]])
    res = mean_class_accuracy(top, torch.tensor([2, 2]), topk=(1, 2), num_classes=3)
    assert res == {'top1': 50.0, 'top2': 100.0}


def test_many_ties_go_to_the_lower_index():
    # topk_indices needs a stable sort: numpy's default quicksort reorders ties in long rows
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, (6, 64)).astype(np.float32)
    got = topk_indices(scores, 64)
    ref = np.array([sorted(range(64), key=lambda c: (-row[c], c)) for row in scores])
    np.testing.assert_array_equal(got, ref)


def test_per_class_accuracy_defaults_and_absent_classes():
    correct = np.array([True, False, False])
    labels = np.array([0, 0, 0])
    acc, counts = per_class_accuracy(correct, labels)  # default: no fp16 rounding
    assert acc.tolist() == [1 / 3] and counts.tolist() == [3]
    assert acc.dtype == np.float64
    acc, counts = per_class_accuracy(correct, labels, num_classes=3)
    assert acc[0] == 1 / 3 and np.isnan(acc[1]) and np.isnan(acc[2])  # NaN, not None
    assert acc.dtype == np.float64 and counts.tolist() == [3, 0, 0]
    # the array is sized by the largest label (+1) or num_classes, whichever is larger
    assert per_class_accuracy(np.array([True]), np.array([0]))[0].shape == (1, )
    assert per_class_accuracy(np.array([True]), np.array([2]))[0].shape == (3, )
    assert per_class_accuracy(np.array([True]), np.array([2]), num_classes=5)[0].shape == (5, )
    # no samples at all
    acc, counts = per_class_accuracy(np.zeros(0, bool), np.zeros(0, np.int64))
    assert acc.shape == counts.shape == (0, )
    acc, counts = per_class_accuracy(np.zeros(0, bool), np.zeros(0, np.int64), num_classes=2)
    assert np.isnan(acc).all() and counts.tolist() == [0, 0]
    # labels read from float storage (e.g. a float tensor) are class indices too
    acc, _ = per_class_accuracy(np.array([True, False]), np.array([1.0, 1.0]))
    assert acc.shape == (2, ) and acc[1] == 0.5


def test_reference_rounding_rounds_through_fp16():
    correct = np.array([True, False, False])
    acc, _ = per_class_accuracy(correct, np.array([0, 0, 0]), reference_rounding=True)
    assert acc[0] == float(np.float16(1 / 3)) and acc[0] != 1 / 3


@pytest.mark.parametrize('topk', [0, (0, ), (1, 0), -1])
def test_non_positive_k_rejected(topk):
    with pytest.raises(ValueError, match='topk'):
        mean_class_accuracy(np.array([[0, 1]]), np.array([0]), topk=topk)


def test_column_labels_are_flattened():
    top = np.array([[0, 1], [1, 0], [1, 0]])
    flat = mean_class_accuracy(top, np.array([0, 1, 0]), topk=(1, ))
    column = mean_class_accuracy(top, np.array([[0], [1], [0]]), topk=(1, ))
    assert flat == column == {'top1': 75.0}


# ------------------------------------------------------------------------- models/retrieval.py
def _feats_text(k=5, c=7, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(k, d, generator=g) * 3.0  # not unit norm
    text = torch.randn(c, d, generator=g) * torch.linspace(0.5, 2.0, c)[:, None]  # rows differ
    return feats, text


def _manual_logits(feats, text, tau=0.01, normalize_text=True):
    f = feats / feats.norm(dim=-1, keepdim=True)
    t = text / text.norm(dim=-1, keepdim=True) if normalize_text else text
    return f @ t.t() / tau


def test_class_logits_defaults_and_values():
    from densevlm_mm.models.retrieval import class_logits
    feats, text = _feats_text()
    torch.testing.assert_close(class_logits(feats, text), _manual_logits(feats, text))
    torch.testing.assert_close(class_logits(feats, text, 0.5, False),
                               _manual_logits(feats, text, 0.5, False))


def test_retrieve_values_and_defaults():
    from densevlm_mm.models.retrieval import retrieve
    feats, text = _feats_text()
    logits, conf, label = retrieve(feats, text)
    ref = _manual_logits(feats, text)
    torch.testing.assert_close(logits, ref)
    probs = ref.softmax(dim=1)
    torch.testing.assert_close(conf, probs.max(dim=1).values)
    assert torch.equal(label, probs.argmax(dim=1))
    logits2, conf2, _ = retrieve(feats, text, 0.2, False)
    torch.testing.assert_close(logits2, _manual_logits(feats, text, 0.2, False))
    torch.testing.assert_close(conf2, (logits2.softmax(1)).max(1).values)


def test_retrieve_regions_keys_values_and_flags():
    from densevlm_mm.models.retrieval import retrieve_regions
    feats, text = _feats_text()
    flags = torch.tensor([1, 1, 0, 1, 0, 0, 0], dtype=torch.uint8)  # not bool on purpose
    out = retrieve_regions(feats, text, flags)
    ref = _manual_logits(feats, text)
    torch.testing.assert_close(out['logits'], ref)
    torch.testing.assert_close(out['probs'], ref.softmax(dim=1))
    torch.testing.assert_close(out['probs'].sum(1), torch.ones(5))
    torch.testing.assert_close(out['conf'], ref.softmax(1).max(1).values)
    assert torch.equal(out['labels'], ref.argmax(1))
    assert out['class_is_thing'].dtype == torch.bool
    assert torch.equal(out['class_is_thing'], flags.bool())
    assert out['region_is_thing'].dtype == torch.bool
    assert torch.equal(out['region_is_thing'], flags.bool()[ref.argmax(1)])
    assert out['tau'] == 0.01 and out['normalize_text'] is True
    assert out['text'] is text
    raw = retrieve_regions(feats, text, flags, tau=0.5, normalize_text=False)
    torch.testing.assert_close(raw['logits'], _manual_logits(feats, text, 0.5, False))
    assert raw['tau'] == 0.5 and raw['normalize_text'] is False


def test_standalone_loss_checks_tau():
    from densevlm_mm.models.losses import DecoupledAlignLoss
    feats, text = _feats_text()
    flags = torch.tensor([True, True, False, True, False, False, False])
    loss = DecoupledAlignLoss(theta=0.0)
    for bad in (0, -0.01, float('nan')):
        with pytest.raises(ValueError) as err:
            loss(feats, feats, text, text, flags, tau=bad)
        msg = str(err.value)
        assert msg.startswith('DecoupledAlignLoss.forward: tau must be')
        assert '(0, inf)' in msg and 'e.g. tau=0.01' in msg
    # the default tau is 0.01: identical to passing it
    student = feats.flip(0)
    a = loss(student, feats, text, text, flags)
    b = loss(student, feats, text, text, flags, tau=0.01)
    c = loss(student, feats, text, text, flags, tau=0.02)
    torch.testing.assert_close(a['loss_align'], b['loss_align'])
    assert not torch.allclose(a['loss_align'], c['loss_align'])


# ------------------------------------------------------------ models/losses/decoupled_align_loss.py
def _kl_rows(t_logits, s_logits):
    log_p = t_logits.log_softmax(-1)
    return (log_p.exp() * (log_p - s_logits.log_softmax(-1))).sum(-1)


def _loss_case(seed=1):
    from densevlm_mm.models.retrieval import retrieve_regions
    feats, text = _feats_text(k=6, c=7, seed=seed)
    g = torch.Generator().manual_seed(seed + 10)
    student = torch.randn(6, 6, generator=g)
    s_text = torch.randn(7, 6, generator=g) * torch.linspace(0.3, 3.0, 7)[:, None]
    return feats, text, student, s_text, retrieve_regions


def test_reduction_mean_with_an_empty_group_and_loss_weight():
    from densevlm_mm.models.losses import DecoupledAlignLoss
    feats, text, student, s_text, retrieve_regions = _loss_case()
    flags = torch.ones(7, dtype=torch.bool)  # every class a thing: the stuff group is empty
    ret = retrieve_regions(feats, text, flags)
    out = DecoupledAlignLoss(theta=0.0, reduction='mean').from_retrieval(student, s_text, ret)
    s_logits = _manual_logits(student, s_text)
    ref = _kl_rows(ret['logits'], s_logits).mean()  # thing -> thing columns = all columns here
    torch.testing.assert_close(out['loss_align'], ref)
    assert out['num_stuff'].item() == 0 and out['num_thing'].item() == 6
    for w in (2.0, 0.5):
        weighted = DecoupledAlignLoss(theta=0.0, reduction='mean', loss_weight=w)
        torch.testing.assert_close(weighted.from_retrieval(student, s_text, ret)['loss_align'],
                                   ref * w)


def test_nothing_kept_gives_exact_zero_in_both_reductions():
    from densevlm_mm.models.losses import DecoupledAlignLoss
    feats, text, student, s_text, retrieve_regions = _loss_case()
    ret = retrieve_regions(feats, text, torch.tensor([True] * 3 + [False] * 4))
    student = student.clone().requires_grad_(True)
    for reduction in ('mean', 'reference'):
        out = DecoupledAlignLoss(theta=1.0, reduction=reduction).from_retrieval(
            student, s_text, ret)
        assert out['num_kept'].item() == 0
        assert out['loss_align'].item() == 0.0 and out['loss_align'].requires_grad


def test_unnormalised_text_reaches_the_student_logits():
    from densevlm_mm.models.losses import DecoupledAlignLoss
    feats, text, student, s_text, retrieve_regions = _loss_case()
    flags = torch.ones(7, dtype=torch.bool)
    ret = retrieve_regions(feats, text, flags, tau=0.05, normalize_text=False)
    out = DecoupledAlignLoss(theta=0.0, reduction='mean').from_retrieval(student, s_text, ret)
    ref = _kl_rows(ret['logits'], _manual_logits(student, s_text, 0.05, False)).mean()
    torch.testing.assert_close(out['loss_align'], ref)


def test_shape_checks_name_each_mismatch():
    from densevlm_mm.models.losses import DecoupledAlignLoss
    feats, text, student, s_text, retrieve_regions = _loss_case()
    flags = torch.tensor([True] * 3 + [False] * 4)
    loss = DecoupledAlignLoss(theta=0.0)
    ret = retrieve_regions(feats, text, flags)
    with pytest.raises(ValueError, match='student classes'):  # regions agree, classes do not
        loss.from_retrieval(student, s_text[:5], ret)
    with pytest.raises(ValueError, match='student regions'):  # classes agree, regions do not
        loss.from_retrieval(student[:4], s_text, ret)
    with pytest.raises(ValueError, match=r'\[K, D\]'):  # only the teacher is not 2-D
        loss(student, feats[None], s_text, text, flags)
    with pytest.raises(ValueError, match=r'\[K, D\]'):  # only the student is not 2-D
        loss(student[None], feats, s_text, text, flags)
    with pytest.raises(ValueError, match='class counts differ'):  # texts agree, is_thing not
        loss(student, feats, s_text, text, flags[:5])


@pytest.mark.parametrize('kwargs,start,example', [
    (dict(mode='x'), "DecoupledAlignLoss: mode must be one of ['all', 'fully_decoupled', ",
     "e.g. mode='all'"),
    (dict(reduction='sum'), "DecoupledAlignLoss: reduction must be one of ['reference', 'mean']",
     "e.g. reduction='reference'"),
    (dict(theta=1.5), 'DecoupledAlignLoss: theta must be a number in [0, 1], got 1.5',
     'e.g. theta=0.3.'),
    (dict(theta=-0.1), 'DecoupledAlignLoss: theta must be a number in [0, 1]', 'e.g. theta=0.3.'),
    (dict(loss_weight=-1), 'DecoupledAlignLoss: loss_weight must be a number in [0, inf)',
     'e.g. loss_weight=1.0.'),
    (dict(tau=0.01), 'DecoupledAlignLoss: tau is configured once, on the P-VLM retriever',
     'tau=...'),
])
def test_loss_config_errors_name_the_class_and_the_argument(kwargs, start, example):
    from densevlm_mm.models.losses import DecoupledAlignLoss
    with pytest.raises(ValueError) as err:
        DecoupledAlignLoss(**kwargs)
    assert str(err.value).startswith(start) and example in str(err.value)
    with pytest.raises(TypeError, match=r"DecoupledAlignLoss got unexpected arguments \['foo'\]"):
        DecoupledAlignLoss(foo=1)


@pytest.mark.parametrize('theta', [0.0, 1.0])
def test_theta_range_ends_are_accepted(theta):
    from densevlm_mm.models.losses import DecoupledAlignLoss
    assert DecoupledAlignLoss(theta=theta).theta == theta


def test_retriever_defaults_and_flag_check(demo):
    import os.path as osp

    from densevlm_mm.apis.tiny_demo import TEACHER
    from densevlm_mm.models.retrieval import RegionRetriever
    from densevlm_mm.registry import MODELS
    from densevlm_mm.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    backbone = dict(type='DenseVLMBackbone', model_name=TEACHER,
                    pretrained=osp.join(demo, 'checkpoints', 'teacher.pt'))
    text = osp.join(demo, 'text', 'teacher_vocabulary.pt')
    r = RegionRetriever(backbone, text)
    assert (r.tau, r.precision, r.normalize_text, r.inference_mode) == (0.01, 'fp32', True, False)
    assert isinstance(r, MODELS.get('RegionRetriever'))
    with pytest.raises(ValueError) as err:
        RegionRetriever(backbone, text, inference_mode='yes')
    assert str(err.value).startswith("RegionRetriever: inference_mode must be True or False, got "
                                     "'yes' (str); write inference_mode=True")


# ---------------------------------------------------------------------- datasets/transforms/*
def _pan_files(tmp_path, segments, h=30, w=40):
    from PIL import Image

    from densevlm_mm.datasets.transforms.panoptic import id2rgb
    ids = np.zeros((h, w), np.int64)
    for sid, (y0, y1, x0, x1) in segments:
        ids[y0:y1, x0:x1] = sid
    img = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / 'i.png')
    Image.fromarray(id2rgb(ids)).save(tmp_path / 'p.png')
    return str(tmp_path / 'i.png'), str(tmp_path / 'p.png')


def _seg(sid, thing, **kw):
    return dict(id=sid, category_id=1, label=int(thing), isthing=int(thing),
                bbox=[0, 0, 10, 10], **kw)


def test_panoptic_skips_continue_with_the_next_segments(tmp_path):
    from densevlm_mm.datasets.transforms import LoadPanopticRegions
    img, pan = _pan_files(tmp_path, [(1, (0, 10, 0, 10)), (2, (10, 20, 0, 10)),
                                     (3, (20, 30, 0, 10))])
    infos = [_seg(1, True, iscrowd=1), _seg(99, True), _seg(2, True), _seg(3, False)]
    with pytest.warns(UserWarning, match=r'segments \[99\]'):
        out = LoadPanopticRegions(min_size=0, skip_crowd=True).transform(
            dict(img_path=img, seg_map_path=pan, segments_info=infos))
    assert out['region_labels'].tolist() == [1, 0]  # crowd and missing id skipped, rest kept
    assert out['img_shape'] == out['ori_shape'] == (30, 40)
    # without the iscrowd key a segment is not a crowd
    out = LoadPanopticRegions(min_size=0, skip_crowd=True).transform(
        dict(img_path=img, seg_map_path=pan, segments_info=[
            _seg(1, True), _seg(2, True, iscrowd=1), _seg(3, False, iscrowd=1)]))
    assert out['region_labels'].tolist() == [1]


def test_panoptic_no_regions_keeps_dtypes(tmp_path):
    from densevlm_mm.datasets.transforms import LoadPanopticRegions
    img, pan = _pan_files(tmp_path, [(1, (0, 2, 0, 2))])
    out = LoadPanopticRegions(min_size=8).transform(
        dict(img_path=img, seg_map_path=pan, segments_info=[_seg(1, False)]))
    assert out['region_boxes'].shape == (0, 4) and out['region_boxes'].dtype == np.float32
    assert out['region_labels'].dtype == np.int64 and out['region_labels'].shape == (0, )
    assert out['region_is_thing'].dtype == bool and out['region_is_thing'].shape == (0, )
    assert out['region_masks'].shape == (0, 30, 40) and out['region_masks'].dtype == bool


def test_panoptic_reference_protocol_uses_inclusive_stuff_boxes(tmp_path):
    from densevlm_mm.datasets.transforms import LoadPanopticRegions
    img, pan = _pan_files(tmp_path, [(1, (5, 15, 10, 30))])
    info = [_seg(1, False)]
    ours = LoadPanopticRegions(min_size=0).transform(
        dict(img_path=img, seg_map_path=pan, segments_info=info))
    ref = LoadPanopticRegions(min_size=0).transform(
        dict(img_path=img, seg_map_path=pan, segments_info=info, region_protocol='reference'))
    assert ours['region_boxes'].tolist() == [[10, 5, 30, 15]]
    assert ref['region_boxes'].tolist() == [[10, 5, 29, 14]]


def test_panoptic_missing_files_and_labels_are_named(tmp_path):
    from densevlm_mm.datasets.transforms import LoadPanopticRegions
    img, pan = _pan_files(tmp_path, [(1, (0, 10, 0, 10))])
    with pytest.raises(FileNotFoundError, match='panoptic segmentation PNG not found'):
        LoadPanopticRegions().transform(dict(img_path=img, seg_map_path=pan + '.missing',
                                             segments_info=[]))
    with pytest.raises(FileNotFoundError, match='image not found'):
        LoadPanopticRegions().transform(dict(img_path=img + '.missing', seg_map_path=pan,
                                             segments_info=[]))
    seg = dict(id=1, category_id=1, isthing=1, bbox=[0, 0, 10, 10])  # no label
    with pytest.raises(KeyError, match='p.png'):
        LoadPanopticRegions().transform(dict(img_path=img, seg_map_path=pan, segments_info=[seg]))
    seg = dict(id=1, category_id=1, label=0, bbox=[0, 0, 10, 10])  # no isthing
    with pytest.raises(KeyError, match='p.png'):
        LoadPanopticRegions().transform(dict(img_path=img, seg_map_path=pan, segments_info=[seg]))


def test_load_image_from_bytes_and_skip_reason(tmp_path):
    import io

    from PIL import Image

    from densevlm_mm.datasets.transforms import LoadImageSafe, get_skipped_images
    buf = io.BytesIO()
    Image.fromarray(np.zeros((12, 14, 3), np.uint8)).save(buf, format='PNG')
    out = LoadImageSafe().transform(dict(img_bytes=buf.getvalue()))
    assert out['img_path'] == '<bytes>' and 'img_bytes' not in out
    assert out['img'].shape == (12, 14, 3) and out['ori_shape'] == (12, 14)
    out = LoadImageSafe().transform(dict(img_bytes=buf.getvalue(), img_path='shard/x.png'))
    assert out['img_path'] == 'shard/x.png'
    assert LoadImageSafe().transform(dict(img_bytes=b'not an image', img_path='bad.jpg')) is None
    reason = get_skipped_images().paths[-1]
    assert reason.startswith('bad.jpg: cannot decode (UnidentifiedImageError')


def test_resize_keeps_original_and_one_pixel_sides():
    from densevlm_mm.datasets.transforms import ResizeLongestPad
    img = np.random.default_rng(0).integers(0, 256, (3, 400, 3), dtype=np.uint8)
    out = ResizeLongestPad(128, min_valid_side=0, keep_ori=True).transform(dict(img=img))
    assert out['ori_img'] is img
    assert out['valid_hw'] == (1, 128)  # round(3 * 0.32) = 1: the shorter side never drops to 0
    assert out['img_shape'] == out['pad_shape'] == (128, 128)
    tall = ResizeLongestPad(128, min_valid_side=0).transform(dict(img=img.transpose(1, 0, 2)))
    assert tall['valid_hw'] == (128, 1)
    assert 'ori_img' not in ResizeLongestPad(128, min_valid_side=0).transform(dict(img=img))


def test_resize_default_interpolation_is_pil_bicubic():
    from PIL import Image

    from densevlm_mm.datasets.transforms import ResizeLongestPad
    img = np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    out = ResizeLongestPad(96).transform(dict(img=img))
    ref = np.asarray(Image.fromarray(img).resize((96, 64), Image.BICUBIC))
    np.testing.assert_array_equal(out['img'][:64, :96], ref)


def test_thin_image_skip_names_the_image():
    from densevlm_mm.datasets.transforms import ResizeLongestPad, get_skipped_images
    before = get_skipped_images().count
    img = np.zeros((4, 512, 3), np.uint8)
    assert ResizeLongestPad(128).transform(dict(img=img, img_path='thin.png')) is None
    assert ResizeLongestPad(128).transform(dict(img=img)) is None
    rec = get_skipped_images()
    assert rec.count == before + 2
    assert rec.paths[-2].startswith('thin.png: too thin for the model')
    assert rec.paths[-1].startswith('<image>: too thin for the model')


def test_backend_args_reach_the_file_reader(tmp_path):
    from densevlm_mm.datasets.transforms import LoadImageSafe, LoadPanopticRegions
    img, pan = _pan_files(tmp_path, [(1, (0, 10, 0, 10))])
    bad = dict(backend='no_such_backend')
    with pytest.raises(Exception):
        LoadPanopticRegions(backend_args=bad).transform(
            dict(img_path=img, seg_map_path=pan, segments_info=[]))
    assert LoadImageSafe(backend_args=bad).transform(dict(img_path=img)) is None
    assert LoadImageSafe().transform(dict(img_path=img)) is not None


def test_resize_outputs_scale_dtypes_and_nearest_masks():
    import cv2
    from PIL import Image

    from densevlm_mm.datasets.transforms import ResizeLongestPad
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    masks = np.zeros((2, 30, 50), bool)
    masks[0] = rng.random((30, 50)) > 0.5
    masks[1, 0, 0] = True  # one pixel: gone after the 0.6x nearest resize
    out = ResizeLongestPad(30, interpolation='nearest').transform(
        dict(img=img, region_boxes=[[0.0, 0.0, 10.0, 20.0]], region_masks=masks))
    assert out['scale_factor'] == (30 / 50, 18 / 30)
    assert out['region_boxes'].dtype == np.float32
    np.testing.assert_allclose(out['region_boxes'], [[0, 0, 6, 12]], rtol=1e-6)
    ref_img = np.asarray(Image.fromarray(img).resize((30, 18), Image.NEAREST))
    np.testing.assert_array_equal(out['img'][:18], ref_img)
    assert out['region_masks'].dtype == bool and out['region_masks'].shape == (2, 30, 30)
    ref0 = cv2.resize(masks[0].astype(np.uint8), (30, 18), interpolation=cv2.INTER_NEAREST) > 0
    np.testing.assert_array_equal(out['region_masks'][0, :18], ref0)
    assert not out['region_masks'][:, 18:].any()
    if 'region_mask_empty' in out:
        assert out['region_mask_empty'].tolist() == [False, not out['region_masks'][1].any()]


def test_backend_args_serve_both_files(tmp_path):
    """A registered file backend that maps ``virtual://`` paths onto tmp_path: only a transform
    that passes its backend_args to every read can load the image and the PNG."""
    from mmengine.fileio import register_backend
    from mmengine.fileio.backends import BaseStorageBackend

    from densevlm_mm.datasets.transforms import LoadImageSafe, LoadPanopticRegions
    root = str(tmp_path)

    class _Mapped(BaseStorageBackend):
        def __init__(self, **kwargs):
            pass

        def get(self, filepath):
            with open(str(filepath).replace('virtual://', root + '/'), 'rb') as f:
                return f.read()

        def get_text(self, filepath, encoding='utf-8'):
            return self.get(filepath).decode(encoding)

    # a fresh name per call: mmengine caches backend instances by their arguments
    name = f'g_tests_mapped_{abs(hash(root))}'
    register_backend(name, _Mapped, force=True)
    _pan_files(tmp_path, [(1, (0, 10, 0, 10))])
    args = dict(backend=name)
    out = LoadPanopticRegions(min_size=0, backend_args=args).transform(
        dict(img_path='virtual://i.png', seg_map_path='virtual://p.png',
             segments_info=[_seg(1, True)]))
    assert out['img'].shape == (30, 40, 3) and len(out['region_labels']) == 1
    assert LoadImageSafe(backend_args=args).transform(
        dict(img_path='virtual://i.png'))['img'].shape == (30, 40, 3)


def test_retriever_config_checks_and_arguments(demo, tmp_path):
    import os.path as osp

    from densevlm_mm.apis.tiny_demo import TEACHER
    from densevlm_mm.models.retrieval import RegionRetriever
    backbone = dict(type='DenseVLMBackbone', model_name=TEACHER,
                    pretrained=osp.join(demo, 'checkpoints', 'teacher.pt'))
    text = osp.join(demo, 'text', 'teacher_vocabulary.pt')
    cases = [
        (dict(precision='int8'), "RegionRetriever: precision must be one of ['bf16', 'fp16', "
         "'fp32'], got 'int8'; e.g. precision='bf16'."),
        (dict(tau=0), 'RegionRetriever: tau must be a number in (0, inf), got 0 (int); write a '
         'number in (0, inf) without quotes, e.g. tau=0.01.'),
        (dict(normalize_text='no'), "RegionRetriever: normalize_text must be True or False, got "
         "'no' (str); write normalize_text=True"),
    ]
    n = len(torch.load(text, weights_only=True)['class_names'])
    for bad in (0, n + 1, 2.5):
        cases.append((dict(reference_thing_count=bad),
                      f'RegionRetriever: reference_thing_count must be an integer in [1, {n}], '
                      f'got {bad!r}'))
    for kwargs, start in cases:
        with pytest.raises(ValueError) as err:
            RegionRetriever(backbone, text, **kwargs)
        assert str(err.value).startswith(start), str(err.value)
    assert f'e.g. reference_thing_count={n}.' in str(err.value)
    # the range ends are valid: 1 -> no thing class, n -> the last class is stuff
    assert not RegionRetriever(backbone, text, reference_thing_count=1).class_is_thing.any()
    ends = RegionRetriever(backbone, text, reference_thing_count=n).class_is_thing
    assert ends[:n - 1].all() and not ends[n - 1]
    # init_cfg and the vocabulary check are passed on
    cfg = dict(type='Pretrained', checkpoint='unused.pth')
    assert RegionRetriever(backbone, text, init_cfg=cfg).init_cfg == cfg
    other = tmp_path / 'other.txt'
    other.write_text('thing\tzebra\nstuff\tsea\n')
    with pytest.raises(ValueError):
        RegionRetriever(backbone, text, vocabulary=str(other))
