"""tools/demo.py on tiny models and generated images: every mode writes PNGs of the image's size;
bad inputs give clear errors or counted skips; the `make demo` picture stage."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TOOLS = Path(__file__).resolve().parents[2] / 'tools'
H, W = 48, 80


def _tool(relpath):
    from conftest import load_tool
    return load_tool(relpath)


@pytest.fixture(scope='module')
def demo_tool():
    return _tool('demo.py')


@pytest.fixture(scope='module')
def clip_ckpt(tmp_path_factory):
    from densevlm_mm.models.clip_factory import create_clip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('clip') / 'tiny_eva.pt'
    torch.save(create_clip('densevlm-tiny-eva02')[0].state_dict(), path)
    return str(path)


def _image(path, h=H, w=W):
    rng = np.random.default_rng(1)
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[: h // 2] = (90, 160, 230)
    img[h // 2:] = (240, 240, 240)
    img[h // 3:h - 4, w // 4:w // 2] = (200, 30, 30)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)
    return str(path)


def _size(path):
    with Image.open(path) as im:
        assert im.format == 'PNG'
        im.load()
        return im.size


def _model_args(clip_ckpt, out, tmp_path):
    return ['--model', 'densevlm-tiny-eva02', '--pretrained', clip_ckpt, '--image-size', '64',
            '--out', str(out), '--cache-dir', str(tmp_path / 'cache')]


def test_all_modes_write_pngs_of_the_image_size(demo_tool, clip_ckpt, tmp_path, capsys):
    img = _image(tmp_path / 'ski.png')
    out = tmp_path / 'out'
    written = demo_tool.main([img, *_model_args(clip_ckpt, out, tmp_path),
                              '--custom-vocabulary', 'snow, skis,sky,person',
                              '--mode', 'seg', 'heatmap', 'grid', 'boxes',
                              '--boxes', '0,0,40,24;20,16,80,48', '--grid', '2x3'])
    names = {Path(p).name for p in written}
    assert {'ski_seg.png', 'ski_labels.png', 'ski_heatmaps.png', 'ski_grid.png',
            'ski_boxes.png', 'ski_boxes.json'} <= names
    assert sum(n.startswith('ski_heatmap_') for n in names) == 4  # one map per class
    for p in written:
        if p.endswith('.png') and not p.endswith('_heatmaps.png'):
            assert _size(p) == (W, H), p
    w_sheet, h_sheet = _size(out / 'ski_heatmaps.png')  # 5 panels (image + 4) of 256 px width
    # panels keep the aspect up to the 64-px canvas's rounding (one canvas pixel = 4 panel px)
    assert w_sheet == 4 * 256 and abs(h_sheet / 2 - 22 - 256 * H / W) <= 4
    labels = np.asarray(Image.open(out / 'ski_labels.png'))
    assert labels.shape == (H, W) and labels.max() < 4
    boxes = json.loads((out / 'ski_boxes.json').read_text())
    assert [b['box'] for b in boxes] == [[0, 0, 40, 24], [20, 16, 80, 48]]
    assert all(b['label'] in ('snow', 'skis', 'sky', 'person') for b in boxes)
    assert (out / 'classes.txt').read_text().splitlines() == ['0\tsnow', '1\tskis', '2\tsky',
                                                              '3\tperson']
    stdout = capsys.readouterr().out
    assert 'ski: ' in stdout and 'box [0, 0, 40, 24] ->' in stdout
    # second run: embeddings from the cache, output scaled 2x with the aspect kept
    written = demo_tool.main([img, *_model_args(clip_ckpt, out, tmp_path),
                              '--custom-vocabulary', 'snow,skis,sky,person', '--scale', '2'])
    assert 'cached in' in capsys.readouterr().out
    assert _size(out / 'ski_seg.png') == (2 * W, 2 * H)


def test_coco_json_boxes_matched_by_file_name(demo_tool, clip_ckpt, tmp_path, capsys):
    a, b = _image(tmp_path / 'a.png'), _image(tmp_path / 'b.png', 40, 40)
    ann = dict(images=[dict(id=7, file_name='images/a.png')],
               annotations=[dict(image_id=7, bbox=[10, 5, 30, 20])])
    (tmp_path / 'boxes.json').write_text(json.dumps(ann))
    out = tmp_path / 'out'
    written = demo_tool.main([a, b, *_model_args(clip_ckpt, out, tmp_path), '--mode', 'boxes',
                              '--boxes', str(tmp_path / 'boxes.json'),
                              '--custom-vocabulary', 'dog,cat'])
    assert [Path(p).name for p in written] == ['a_boxes.png', 'a_boxes.json']
    assert json.loads((out / 'a_boxes.json').read_text())[0]['box'] == [10, 5, 40, 25]
    assert 'skipping boxes for' in capsys.readouterr().err


@pytest.mark.parametrize('vocab,message', [
    ('snow', 'only 1 class'),
    ('snow,sky,Snow', 'listed twice'),
    ('snow,,sky', 'empty name'),
    ('snow,sky,traffic_light,Traffic light', 'same prompts'),
])
def test_bad_vocabularies(demo_tool, clip_ckpt, tmp_path, vocab, message):
    img = _image(tmp_path / 'x.png')
    with pytest.raises(SystemExit, match=message):
        demo_tool.main([img, *_model_args(clip_ckpt, tmp_path / 'o', tmp_path),
                        '--custom-vocabulary', vocab])


def test_bad_images_and_arguments(demo_tool, clip_ckpt, tmp_path, capsys):
    args = _model_args(clip_ckpt, tmp_path / 'o', tmp_path) + ['--custom-vocabulary', 'a,b']
    with pytest.raises(SystemExit, match='image not found.*missing.jpg'):
        demo_tool.main([str(tmp_path / 'missing.jpg'), *args])
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'\xff\xd8\xff\xe0 truncated')
    with pytest.raises(SystemExit, match='1 of 1 images could not be read: .*bad.jpg'):
        demo_tool.main([str(bad), *args])
    assert 'cannot read the image' in capsys.readouterr().err
    with pytest.raises(SystemExit, match='--mode boxes needs --boxes'):
        demo_tool.main([str(bad), *args, '--mode', 'boxes'])
    img = _image(tmp_path / 'ok.png')
    with pytest.raises(SystemExit, match='outside'):
        demo_tool.main([img, *args, '--mode', 'boxes', '--boxes', f'0,0,{W + 10},10'])
    with pytest.raises(SystemExit, match='not x1,y1,x2,y2'):
        demo_tool.main([img, *args, '--mode', 'boxes', '--boxes', '1,2,3'])
    with pytest.raises(SystemExit, match='either --config'):
        demo_tool.main([img, '--config', 'c.py', '--model', 'm'])
    with pytest.raises(SystemExit, match='no model'):
        demo_tool.main([img])


def test_directory_with_other_files_is_skipped_with_a_message(demo_tool, clip_ckpt, tmp_path,
                                                               capsys):
    folder = tmp_path / 'photos'
    folder.mkdir()
    _image(folder / 'one.png')
    _image(folder / 'two.jpg', 40, 64)
    (folder / 'readme.txt').write_text('hello')
    (folder / 'sub').mkdir()
    written = demo_tool.main([str(folder), *_model_args(clip_ckpt, tmp_path / 'o', tmp_path),
                              '--custom-vocabulary', 'a,b'])
    assert sorted(Path(p).name for p in written) == ['one_labels.png', 'one_seg.png',
                                                     'two_labels.png', 'two_seg.png']
    assert _size(tmp_path / 'o' / 'two_seg.png') == (64, 40)
    err = capsys.readouterr().err
    assert 'skipping' in err and 'readme.txt: not an image file extension' in err
    assert 'sub: a sub-directory' in err
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'a.txt').write_text('x')
    with pytest.raises(SystemExit, match='no image files'):
        demo_tool.main([str(empty), *_model_args(clip_ckpt, tmp_path / 'o', tmp_path),
                        '--custom-vocabulary', 'a,b'])


def test_det_mode_with_a_tiny_fvit(demo_tool, clip_ckpt, tmp_path, capsys):
    from densevlm_mm.apis.detection import init_detector
    from densevlm_mm.text_embeddings import generate_text_embedding_file
    img = _image(tmp_path / 'street.png')
    config = str(TOOLS.parent / 'configs' / 'fvit' / 'fvit_tiny_demo.py')
    with pytest.raises(SystemExit, match='F-ViT config'):
        demo_tool.main([img, *_model_args(clip_ckpt, tmp_path / 'o', tmp_path), '--mode', 'det'])
    vocab = tmp_path / 'vocab.json'
    vocab.write_text(json.dumps([dict(name=n, isthing=1)
                                 for n in ('person', 'car', 'dog', 'bottle')]))
    text = tmp_path / 'text.pt'
    generate_text_embedding_file('densevlm-tiny-eva02', clip_ckpt, str(vocab), str(text),
                                 progress=False)
    opts = {'model.roi_head.bbox_head.text_embeddings': str(text)}
    torch.manual_seed(0)
    detector = init_detector(config, None,
                             cfg_options={**opts, 'model.backbone.pretrained': clip_ckpt})
    ckpt = tmp_path / 'fvit.pth'
    torch.save(dict(meta={}, state_dict=detector.state_dict()), ckpt)
    out = tmp_path / 'det'
    args = [img, '--config', config, '--checkpoint', str(ckpt), '--mode', 'det', '--out',
            str(out), '--score-thr', '0', '--cfg-options', f'{next(iter(opts))}={text}',
            'model.backbone.pretrained=None']  # whatever work_dirs/ holds here
    written = demo_tool.main(args)
    assert [Path(p).name for p in written] == ['street_det.png', 'street_det.json']
    assert _size(out / 'street_det.png') == (W, H)
    dets = json.loads((out / 'street_det.json').read_text())
    assert dets and all(d['label'] in ('person', 'car', 'dog', 'bottle') for d in dets)
    assert [d['score'] for d in dets] == sorted((d['score'] for d in dets), reverse=True)
    assert 'F-ViT detector, 4 classes' in capsys.readouterr().out
    with pytest.raises(SystemExit, match='no text tower.*--text-checkpoint'):
        demo_tool.main(args + ['--custom-vocabulary', 'a,b'])
    # a vocabulary named here, encoded by the text tower that made the detector's rows
    written = demo_tool.main(args + ['--custom-vocabulary', 'zebra,person', '--text-checkpoint',
                                     clip_ckpt])
    dets = json.loads((out / 'street_det.json').read_text())
    assert dets and {d['label'] for d in dets} <= {'zebra', 'person'}
    assert 'F-ViT detector, 2 classes: zebra, person' in capsys.readouterr().out
    torch.save(dict(state_dict={k: v for k, v in detector.state_dict().items()
                                if not k.startswith('rpn_head.')}), tmp_path / 'part.pth')
    with pytest.raises(SystemExit, match='missing keys'):
        demo_tool.main([img, '--config', config, '--checkpoint', str(tmp_path / 'part.pth'),
                        '--mode', 'det', '--cfg-options', f'{next(iter(opts))}={text}'])


def test_seg_mode_with_a_trained_catseg(demo_tool, tmp_path, capsys):
    """A CAT-Seg config + checkpoint: the segmentor's own label map of the vocabulary."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from densevlm_mm.registry import MODELS
    from densevlm_mm.utils import register_all_modules
    config = str(TOOLS.parent / 'configs' / 'catseg' / 'catseg_tiny_demo.py')
    cfg = Config.fromfile(config)
    cfg.model.train_classes = ['sky', 'car', 'grass', 'person', 'road', 'dog']
    register_all_modules(init_default_scope=False)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    torch.save(dict(meta={}, state_dict=model.state_dict()), tmp_path / 'iter_60.pth')
    img = _image(tmp_path / 'road.png')
    out = tmp_path / 'seg'
    args = [img, '--config', config, '--checkpoint', str(tmp_path / 'iter_60.pth'), '--out',
            str(out), '--scale', '2']
    written = demo_tool.main(args + ['--custom-vocabulary', 'sky,road,zebra'])
    assert [Path(p).name for p in written] == ['road_seg.png', 'road_labels.png']
    assert _size(out / 'road_seg.png') == (2 * W, 2 * H)
    assert _size(out / 'road_labels.png') == (W, H)
    assert np.asarray(Image.open(out / 'road_labels.png')).max() < 3
    assert (out / 'classes.txt').read_text().splitlines() == ['0\tsky', '1\troad', '2\tzebra']
    assert 'CATSeg segmentor, 3 classes: sky, road, zebra' in capsys.readouterr().out
    demo_tool.main(args)  # no vocabulary: the classes it was trained with
    assert len((out / 'classes.txt').read_text().splitlines()) == 6
    with pytest.raises(SystemExit, match='segmentor config: it draws label maps'):
        demo_tool.main(args + ['--mode', 'heatmap'])


def test_picture_stage_of_make_demo(demo, tmp_path):
    """The stage runs tools/demo.py's seg mode on a generated image with the config + a
    work-dir checkpoint (here a fabricated one; the real one comes from the align stage)."""
    from densevlm_mm.models.clip_factory import create_clip
    root = tmp_path / 'tiny_demo'
    shutil.copytree(Path(demo) / 'data', root / 'data')
    (root / 'checkpoints').mkdir()
    shutil.copy(Path(demo) / 'checkpoints' / 'student.pt', root / 'checkpoints')
    torch.manual_seed(3)
    visual = create_clip('densevlm-tiny-eva02')[0].visual.state_dict()
    ckpt = root / 'train' / 'epoch_5.pth'
    ckpt.parent.mkdir()
    torch.save(dict(meta={}, state_dict={f'backbone.visual.{k}': v for k, v in visual.items()}),
               ckpt)
    sys.path.insert(0, str(TOOLS))
    try:
        picture = _tool('demo_stages/picture.py')
        lines = []
        pngs = picture.run(str(root), str(ckpt),
                           str(TOOLS.parent / 'configs' / 'densevlm' / 'densevlm_tiny_demo.py'),
                           log=lines.append)
    finally:
        sys.path.remove(str(TOOLS))
    first = sorted((root / 'data' / 'images').iterdir())[0]
    with Image.open(first) as im:
        w, h = im.size
    assert [Path(p).name for p in pngs] == [f'{first.stem}_seg.png', f'{first.stem}_labels.png']
    assert _size(pngs[0]) == (4 * w, 4 * h) and _size(pngs[1]) == (w, h)
    assert any('tools/demo.py' in line for line in lines)
    assert any('pixel accuracy' in line for line in lines)
    # the accuracy is against the generated ground truth: a perfect label map scores 100%
    from densevlm_mm.datasets.transforms.panoptic import rgb2id
    panoptic = json.loads((root / 'data' / 'panoptic.json').read_text())
    ann = next(a for a in panoptic['annotations'] if a['file_name'].startswith(first.stem))
    names = [line.split('\t')[1] for line in
             (root / 'figures' / 'classes.txt').read_text().splitlines()]
    cat = {c['id']: c['name'] for c in panoptic['categories']}
    ids = rgb2id(np.asarray(Image.open(root / 'data' / 'panoptic' / ann['file_name'])
                            .convert('RGB')))
    perfect = np.zeros(ids.shape, dtype=np.uint8)
    for seg in ann['segments_info']:
        perfect[ids == seg['id']] = names.index(cat[seg['category_id']])
    Image.fromarray(perfect).save(tmp_path / 'perfect.png')
    acc = picture.ground_truth_accuracy(str(root), first.name,
                                        str(root / 'figures' / 'classes.txt'),
                                        str(tmp_path / 'perfect.png'))
    assert acc['all'] == 1.0 and set(acc) - {'all'} == {cat[s['category_id']]
                                                         for s in ann['segments_info']}
    first_seg = cat[ann['segments_info'][0]['category_id']]
    perfect[ids == ann['segments_info'][0]['id']] = (names.index(first_seg) + 1) % len(names)
    Image.fromarray(perfect).save(tmp_path / 'worse.png')
    acc = picture.ground_truth_accuracy(str(root), first.name,
                                        str(root / 'figures' / 'classes.txt'),
                                        str(tmp_path / 'worse.png'))
    assert acc['all'] < 1.0 and acc[first_seg] < 1.0
