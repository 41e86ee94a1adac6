"""Open-vocabulary demo: your images + your class names -> label maps, heat-maps, labelled boxes.

    python tools/demo.py IMAGE [IMAGE|DIR ...]
        (--config CFG --checkpoint CKPT | --model NAME --pretrained PATH)
        [--vocabulary coco|ade150|ade847|lvis|densevlm316|custom]
        [--custom-vocabulary "snow,skis,sky,person" | --custom-vocabulary names.txt]
        [--mode seg|heatmap|grid|boxes|det ...] [--boxes "x1,y1,x2,y2;..." | --boxes file.json]
        [--out DIR] [--device cpu|cuda] [--image-size S] [--scale K] [--grid 4x6] [--theta 0.3]
        [--score-thr 0.3] [--text-checkpoint CLIP]

Model: a config of this project + a work-dir checkpoint (like ``tools/test.py``; the config's
``model.backbone.pretrained`` CLIP checkpoint gives the text tower, the checkpoint's ``backbone.*``
the aligned image tower), or an open_clip model name + a local CLIP checkpoint (open_clip,
EVA-CLIP or a released DenseVLM file). Class names are encoded with the model's own text tower
(63 prompt templates) and cached under ``~/.cache/densevlm_mm/text_embeddings``. A CAT-Seg or SAN
config + its trained checkpoint draws that segmentor's label map (mode ``seg``; its own text
tower and head); an F-ViT config + checkpoint detects (mode ``det``).

Modes, per image ``<stem>`` (PNGs have the image's size times ``--scale``, aspect kept):

* ``seg``: ``<stem>_seg.png`` the dense label map (arg-max of the per-location similarity,
  upsampled to the image; or the segmentor's prediction) over the image with each class's name on
  its region and a legend of the classes present (mmseg's ``SegLocalVisualizer``);
  ``<stem>_labels.png`` the raw label map (pixel value = class index, listed in ``classes.txt``).
* ``heatmap``: ``<stem>_heatmaps.png`` one panel per class with its similarity map (paper Fig. 4)
  and ``<stem>_heatmap_<k>_<class>.png`` each map alone (custom vocabularies of up to 16 names:
  every class; else the classes present in the label map, largest first, at most 8).
* ``grid``: ``<stem>_grid.png`` the image cut into ``--grid`` cells, each labelled with its class
  and confidence; cells at or below ``--theta`` hatched (Fig. 10).
* ``boxes``: ``<stem>_boxes.png`` / ``<stem>_boxes.json`` labels of the given boxes: ``--boxes
  "x1,y1,x2,y2;..."`` (pixels, every image) or a COCO-style json (``bbox`` = x,y,w,h; matched to
  images by ``file_name`` when it has ``images``, else used for every image).
* ``det``: ``<stem>_det.png`` / ``<stem>_det.json`` boxes of an F-ViT detector config +
  checkpoint (mmdet's ``DetLocalVisualizer``): its own classes, or ``--vocabulary`` /
  ``--custom-vocabulary`` encoded by ``--text-checkpoint`` (the CLIP whose text tower made the
  detector's class embeddings).
"""
import argparse
import json
import os
import os.path as osp
import re
import sys
import time
from typing import Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

MODES = ('seg', 'heatmap', 'grid', 'boxes', 'det')
VOCABULARIES = ('coco', 'ade150', 'ade847', 'lvis', 'densevlm316', 'custom')
MAX_HEATMAPS = 8


class DemoError(Exception):
    """A problem with the user's input; printed without a traceback."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[1:]))
    parser.add_argument('images', nargs='+', metavar='IMAGE',
                        help='image files and/or directories of images')
    parser.add_argument('--config', help='config of this project (with --checkpoint)')
    parser.add_argument('--checkpoint', help='work-dir checkpoint (epoch_N.pth) for --config')
    parser.add_argument('--model', help='open_clip model name (with --pretrained)')
    parser.add_argument('--pretrained', help='local CLIP checkpoint for --model')
    parser.add_argument('--vocabulary', choices=VOCABULARIES, default=None,
                        help='class list (default: custom when --custom-vocabulary is given, '
                             'else coco)')
    parser.add_argument('--custom-vocabulary', default=None,
                        help='comma-separated class names, or a .txt (one per line) / .json file')
    parser.add_argument('--mode', nargs='+', choices=MODES, default=['seg'],
                        help='one or more outputs (default: seg)')
    parser.add_argument('--boxes', default=None,
                        help='"x1,y1,x2,y2;..." pixels, or a COCO-style json (boxes mode)')
    parser.add_argument('--clip-boxes', action='store_true',
                        help='clip boxes to the image instead of refusing boxes that leave it')
    parser.add_argument('--out', default='demo_out', help='output folder')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--image-size', type=int, default=None,
                        help='side of the square input canvas (default: the config\'s, else 512)')
    parser.add_argument('--scale', type=float, default=1.0,
                        help='output pixels per image pixel (aspect kept)')
    parser.add_argument('--grid', default='4x6', help='rows x columns of the grid mode')
    parser.add_argument('--theta', type=float, default=0.3,
                        help='grid mode: cells with confidence <= theta are hatched')
    parser.add_argument('--score-thr', type=float, default=0.3, help='det mode: score threshold')
    parser.add_argument('--text-checkpoint', default=None,
                        help='det mode with a vocabulary: the CLIP checkpoint whose text tower '
                             "made the detector's class embeddings (default: the config's "
                             'model.backbone.pretrained when it holds one)')
    parser.add_argument('--cache-dir', default=None, help='text-embedding cache folder')
    parser.add_argument('--no-cache', action='store_true', help='do not read or write the cache')
    parser.add_argument('--cfg-options', nargs='+', action='extend',
                        help='override settings of --config, key=value (as tools/train.py)')
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- arguments
def check_args(args) -> None:
    if args.config and args.model:
        raise DemoError('give either --config CFG --checkpoint CKPT or --model NAME --pretrained '
                        'PATH, not both')
    if not args.config and not args.model:
        raise DemoError('no model: give --config CFG --checkpoint CKPT (a training run of this '
                        'project) or --model NAME --pretrained PATH (an open_clip model)')
    if args.model and args.checkpoint:
        raise DemoError('--checkpoint goes with --config; with --model give the CLIP weights as '
                        '--pretrained PATH')
    if args.config and args.pretrained:
        raise DemoError('--pretrained goes with --model; with --config give --checkpoint')
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint'),
                       (args.pretrained, 'checkpoint')):
        if path and not osp.isfile(path):
            raise DemoError(f'{what} file not found: {path}')
    if 'det' in args.mode and len(args.mode) > 1:
        raise DemoError('--mode det uses a detector config; run it on its own')
    if 'boxes' in args.mode and not args.boxes:
        raise DemoError('--mode boxes needs --boxes "x1,y1,x2,y2;..." or --boxes file.json')
    if args.vocabulary == 'custom' and not args.custom_vocabulary:
        raise DemoError('--vocabulary custom needs --custom-vocabulary "name1,name2,..."')
    if args.custom_vocabulary and args.vocabulary not in (None, 'custom'):
        raise DemoError(f'--custom-vocabulary and --vocabulary {args.vocabulary} both given; '
                        'choose one')
    if args.custom_vocabulary is not None and not args.custom_vocabulary.strip(' ,'):
        raise DemoError('--custom-vocabulary is empty; give the class names ("snow,skis,sky") or '
                        'a .txt / .json file of them (without it the demo uses --vocabulary)')
    if args.cfg_options is not None:
        if not args.config:
            raise DemoError('--cfg-options changes the settings of --config; with --model there '
                            'is no config to change')
        from mmengine.config import Config

        from densevlm_mm.utils.cfg_options import check_cfg_options, parse_cfg_options
        try:
            args.cfg_options = parse_cfg_options(args.cfg_options)
            check_cfg_options(Config.fromfile(args.config), args.cfg_options)
        except ValueError as exc:
            raise DemoError(str(exc))
    if args.scale <= 0:
        raise DemoError(f'--scale must be positive, got {args.scale}')
    if not re.fullmatch(r'\s*\d+\s*[xX]\s*\d+\s*', args.grid) or \
            min(int(v) for v in re.split('[xX]', args.grid)) < 1:
        raise DemoError(f'--grid must look like 4x6 (rows x columns), got {args.grid!r}')


def read_custom_vocabulary(value: str) -> List[str]:
    """Names from ``"a,b,c"`` or a file (.txt one per line, ``thing<TAB>name`` allowed; .json a
    list of names / of ``{"name": ...}`` / ``{"names": [...]}``; UTF-8, or UTF-16/32 with a
    byte-order mark). A value that looks like a path of a missing file is refused."""
    from densevlm_mm.apis import parse_class_names
    from densevlm_mm.utils.files import load_json_file, read_text_file
    from densevlm_mm.vocabulary import looks_like_path
    try:
        if osp.isfile(value):
            if value.endswith('.json'):
                data = load_json_file(value, 'vocabulary')
                if isinstance(data, dict):
                    data = data.get('names', [])
                return [e['name'] if isinstance(e, dict) else str(e) for e in data]
            lines = [ln for ln in read_text_file(value, 'vocabulary').splitlines() if ln.strip()]
            return [ln.split('\t', 1)[1] if '\t' in ln else ln for ln in lines]
    except ValueError as exc:
        raise DemoError(str(exc))
    if looks_like_path(value):
        raise DemoError(f'--custom-vocabulary {value!r} looks like a file path, but there is no '
                        'such file; give an existing .txt / .json file, or class names separated '
                        'by commas.')
    return parse_class_names(value)


def parse_box_string(text: str):
    boxes = []
    for k, part in enumerate(p for p in text.split(';') if p.strip()):
        try:
            values = [float(v) for v in part.split(',')]
        except ValueError:
            values = []
        if len(values) != 4:
            raise DemoError(f'--boxes entry {k + 1} {part.strip()!r} is not x1,y1,x2,y2')
        boxes.append(values)
    if not boxes:
        raise DemoError('--boxes holds no box')
    return boxes


def read_box_json(path: str) -> Dict[Optional[str], list]:
    """``{basename or None (all images): [[x1,y1,x2,y2], ...]}`` from a COCO-style json."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise DemoError(f'cannot read the box file {path}: {exc}')
    anns = data.get('annotations', []) if isinstance(data, dict) else data
    images = {im['id']: osp.basename(im['file_name'])
              for im in (data.get('images', []) if isinstance(data, dict) else [])}
    out: Dict[Optional[str], list] = {}
    for k, ann in enumerate(anns):
        bbox = ann.get('bbox') if isinstance(ann, dict) else ann
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
            raise DemoError(f'{path}: annotation {k} has no "bbox": [x, y, w, h]')
        x, y, w, h = (float(v) for v in bbox)
        key = None
        if isinstance(ann, dict) and ann.get('file_name'):
            key = osp.basename(ann['file_name'])
        elif isinstance(ann, dict) and 'image_id' in ann and images:
            if ann['image_id'] not in images:
                raise DemoError(f'{path}: annotation {k} refers to image_id {ann["image_id"]} '
                                'which is not in "images"')
            key = images[ann['image_id']]
        out.setdefault(key, []).append([x, y, x + w, y + h])
    if not out:
        raise DemoError(f'{path} holds no annotation with a bbox')
    return out


def boxes_for(image_path: str, box_source) -> Optional[list]:
    if isinstance(box_source, list):
        return box_source
    return box_source.get(osp.basename(image_path), box_source.get(None))


def unique_stems(paths: List[str]) -> List[str]:
    seen: Dict[str, int] = {}
    stems = []
    for p in paths:
        stem = osp.splitext(osp.basename(p))[0]
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        stems.append(stem if n == 0 else f'{stem}_{n}')
    return stems


def safe(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('-')[:40] or 'class'


# ---------------------------------------------------------------------------------- modes
def write_seg(model, prepared, vocab, out: str, stem: str, scale: float, result=None) -> list:
    """``<stem>_seg.png`` (``result.draw``: names on the regions, legend) and
    ``<stem>_labels.png``; ``result``: a dense or a segmentor result."""
    from densevlm_mm.apis import inference_dense
    from densevlm_mm.visualization import save_label_png
    result = result or inference_dense(model, prepared, vocab)
    seg = osp.join(out, f'{stem}_seg.png')
    result.draw(out_file=seg, scale=scale)
    labels = save_label_png(result.label_map, osp.join(out, f'{stem}_labels.png'),
                            num_classes=len(result.names))
    shown = dict(zip(result.names, result.display_names))
    areas = ', '.join(f'{shown[n]} {"<1" if a < 0.005 else f"{100 * a:.0f}"}%'
                      for n, a in list(result.class_areas().items())[:6])
    print(f'{stem}: {areas}')
    return [seg, labels]


def write_heatmaps(model, prepared, vocab, out: str, stem: str, scale: float,
                   result=None) -> list:
    import numpy as np
    import torch

    from densevlm_mm.apis import inference_dense
    from densevlm_mm.visualization import draw_similarity_heatmaps, draw_similarity_overlay
    from densevlm_mm.visualization.heatmap import similarity_maps
    result = result or inference_dense(model, prepared, vocab)
    if vocab.source == 'custom' and len(vocab) <= 2 * MAX_HEATMAPS:
        rows = list(range(len(vocab)))
    else:
        rows = [vocab.names.index(n) for n in result.class_areas()][:MAX_HEATMAPS]
    p = result.prepared
    nh, nw = p.valid_hw
    text = vocab.embeddings[rows]
    names = [vocab.display_names[i] for i in rows]
    written = [osp.join(out, f'{stem}_heatmaps.png')]
    draw_similarity_heatmaps(p.canvas, result.dense, text, names, out_file=written[0],
                             valid_hw=(nh, nw))
    # single maps at the image's own size: upsample to the canvas, crop, resize to the image
    canvas_hw = p.canvas.shape[:2]
    sims = similarity_maps(result.dense, text, canvas_hw)[:, :nh, :nw]
    h, w = p.image.shape[:2]
    for k, name in enumerate(names):  # one class at a time: a full-size map each
        sim = torch.nn.functional.interpolate(sims[None, k:k + 1], size=(h, w), mode='bilinear',
                                              align_corners=False)[0, 0].numpy()
        path = osp.join(out, f'{stem}_heatmap_{k}_{safe(name)}.png')
        draw_similarity_overlay(p.image, np.ascontiguousarray(sim), out_file=path, title=name,
                                scale=scale)
        written.append(path)
    return written


def write_grid(model, prepared, vocab, out: str, stem: str, scale: float, grid: str,
               theta: float) -> list:
    from densevlm_mm.apis import classify_regions
    from densevlm_mm.visualization import draw_grid_patch_view, grid_boxes
    rows, cols = (int(v) for v in re.split('[xX]', grid.strip()))
    h, w = prepared.image.shape[:2]
    boxes = grid_boxes(h, w, min(rows, h), min(cols, w))
    res = classify_regions(model, prepared, vocab, boxes=boxes)
    conf = res.probs.max(axis=1)
    path = osp.join(out, f'{stem}_grid.png')
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    draw_grid_patch_view(prepared.image, boxes, [res.display_names[i] for i in res.labels],
                         conf, theta=theta, out_file=path, size=size, title=False)
    return [path]


def write_boxes(model, prepared, vocab, out: str, stem: str, scale: float, boxes,
                clip_boxes: bool, image_name: str) -> list:
    from densevlm_mm.apis import check_boxes, classify_regions
    from densevlm_mm.visualization import draw_region_labels
    try:
        shown = check_boxes(boxes, prepared.image.shape[:2], image_name, clip_boxes)
    except ValueError as exc:
        raise DemoError(str(exc))
    res = classify_regions(model, prepared, vocab, boxes=shown)
    path = osp.join(out, f'{stem}_boxes.png')
    probs = res.probs[range(len(res.labels)), res.labels]  # tags: class and probability (%)
    draw_region_labels(prepared.image, shown, res.labels, probs, res.display_names,
                       out_file=path, scale=scale)
    js = osp.join(out, f'{stem}_boxes.json')
    with open(js, 'w') as f:
        json.dump([dict(box=[round(float(v), 2) for v in b], label=res.names[lab],
                        score=round(float(s), 4), prob=round(float(res.probs[k, lab]), 4))
                   for k, (b, lab, s) in enumerate(zip(shown, res.labels, res.scores))],
                  f, indent=1)
    for b, lab, s in zip(shown, res.labels, res.scores):
        print(f'{stem}: box {[round(float(v)) for v in b]} -> {res.display_names[lab]} '
              f'({s:.2f})')
    return [path, js]


# ----------------------------------------------------------------------------------- main
def progress(items, enabled: bool):
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(items))
        for item in items:
            yield item
            bar.update()
        return
    yield from tqdm(items, desc='images', unit='img', file=sys.stderr)


def vocabulary_arg(args, default):
    """The class names of ``--custom-vocabulary`` (checked), the ``--vocabulary`` preset, or
    ``default`` when neither is given (``None``: the model's own classes)."""
    from densevlm_mm.apis import VocabularyError, check_class_names
    vocabulary = args.vocabulary or ('custom' if args.custom_vocabulary else None)
    if vocabulary != 'custom':
        return vocabulary or default
    names = read_custom_vocabulary(args.custom_vocabulary)
    source = args.custom_vocabulary if osp.isfile(args.custom_vocabulary) \
        else '--custom-vocabulary'
    try:
        return check_class_names(names, source)
    except VocabularyError as exc:
        raise DemoError(str(exc))


def config_kind_of(path: str) -> Optional[str]:
    """``config_kind`` of a config file (``'catseg'``, ``'san'``, ``'fvit'``, ...)."""
    from mmengine.config import Config

    from densevlm_mm.apis import config_kind
    return config_kind(Config.fromfile(path))


def run(args) -> List[str]:
    """Run the demo for parsed ``args``; returns the files written."""
    check_args(args)
    from densevlm_mm.apis import (ImageReadError, build_vocabulary_embeddings, collect_images,
                                  inference_dense, init_model, prepare_image)
    try:
        images, skipped = collect_images(args.images)
    except FileNotFoundError as exc:
        raise DemoError(str(exc))
    for path, reason in skipped:
        print(f'skipping {path}: {reason}', file=sys.stderr)
    if not images:
        raise DemoError(f'no image files in {", ".join(args.images)} ({len(skipped)} other '
                        f'entries skipped)')
    if 'det' in args.mode:
        return run_det(args, images, vocabulary_arg(args, None))
    if args.config and config_kind_of(args.config) in ('catseg', 'san'):
        return run_segmentor(args, images, vocabulary_arg(args, None))

    box_source = None
    if 'boxes' in args.mode:
        box_source = read_box_json(args.boxes) if args.boxes.endswith('.json') \
            else parse_box_string(args.boxes)
    vocab_arg = vocabulary_arg(args, 'coco')

    t0 = time.time()
    try:
        if args.config:
            model = init_model(args.config, args.checkpoint, device=args.device,
                               image_size=args.image_size, cfg_options=args.cfg_options)
        else:
            model = init_model(args.model, args.pretrained, device=args.device,
                               image_size=args.image_size)
        vocab = build_vocabulary_embeddings(model, vocab_arg, cache_dir=args.cache_dir,
                                            use_cache=not args.no_cache,
                                            progress=len(vocab_arg) > 100)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise DemoError(str(exc))
    cached = f', cached in {vocab.cache_file}' if vocab.cache_file else ''
    print(f'model {model.model_name} ({model.image_size}px canvas, {args.device}); '
          f'{len(vocab)} classes ({vocab.source}{cached}); {time.time() - t0:.1f} s')

    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'classes.txt'), 'w') as f:
        f.write(''.join(f'{i}\t{n}\n' for i, n in enumerate(vocab.names)))

    def write(path: str, stem: str) -> List[str]:
        prepared = prepare_image(model, path)
        written, result = [], None
        if 'seg' in args.mode or 'heatmap' in args.mode:
            result = inference_dense(model, prepared, vocab)
        if 'seg' in args.mode:
            written += write_seg(model, prepared, vocab, args.out, stem, args.scale, result)
        if 'heatmap' in args.mode:
            written += write_heatmaps(model, prepared, vocab, args.out, stem, args.scale,
                                      result)
        if 'grid' in args.mode:
            written += write_grid(model, prepared, vocab, args.out, stem, args.scale,
                                  args.grid, args.theta)
        if 'boxes' in args.mode:
            boxes = boxes_for(path, box_source)
            if boxes is None:
                print(f'skipping boxes for {path}: {args.boxes} has no box for '
                      f'{osp.basename(path)}', file=sys.stderr)
            else:
                written += write_boxes(model, prepared, vocab, args.out, stem, args.scale,
                                       boxes, args.clip_boxes, path)
        return written

    return for_each_image(args, images, write, (ImageReadError, OSError))


def run_det(args, images: List[str], vocabulary) -> List[str]:
    """F-ViT detection: boxes with the detector's class names (its text-embedding file), or with
    ``--vocabulary`` / ``--custom-vocabulary`` encoded by ``--text-checkpoint``."""
    if not args.config or not args.checkpoint:
        raise DemoError('--mode det needs the F-ViT config and a detector checkpoint: --config '
                        'configs/fvit/<config>.py --checkpoint work_dirs/<fvit run>/epoch_N.pth')
    from densevlm_mm.apis import ImageReadError, load_image
    from densevlm_mm.apis.detection import detect, detector_vocabulary, init_detector
    try:
        model = init_detector(args.config, args.checkpoint, device=args.device,
                              cfg_options=args.cfg_options, text_checkpoint=args.text_checkpoint)
        names = detector_vocabulary(model, vocabulary)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise DemoError(str(exc))
    print(f'F-ViT detector, {len(names)} classes: '
          f'{", ".join(names[:8])}{" ..." if len(names) > 8 else ""}')
    return for_each_image(args, images, lambda path, stem: write_det(
        detect(model, load_image(path), score_thr=args.score_thr), args.out, stem, args.scale,
        args.score_thr), (ImageReadError, OSError))


def write_det(det, out: str, stem: str, scale: float, score_thr: float) -> list:
    png = osp.join(out, f'{stem}_det.png')
    det.draw(out_file=png, scale=scale)
    js = osp.join(out, f'{stem}_det.json')
    with open(js, 'w') as f:
        json.dump(det.to_json(), f, indent=1)
    print(f'{stem}: {len(det.boxes)} detections with score >= {score_thr}')
    return [png, js]


def run_segmentor(args, images: List[str], vocabulary) -> List[str]:
    """A trained CAT-Seg / SAN (``--config`` of configs/catseg|san + its ``--checkpoint``): the
    label map of ``--vocabulary`` / ``--custom-vocabulary`` (default: its training classes)
    from the segmentor's own text tower and head."""
    if args.mode != ['seg']:
        raise DemoError(f'{args.config} is a segmentor config: it draws label maps (--mode seg); '
                        'heatmap / grid / boxes need an alignment config (the dense features of '
                        'the image tower)')
    from densevlm_mm.apis import ImageReadError, inference_segmentor, init_segmentor
    from densevlm_mm.apis.segmentation import segmentor_vocabulary
    try:
        model = init_segmentor(args.config, args.checkpoint, device=args.device,
                               cfg_options=args.cfg_options)
        names = segmentor_vocabulary(model, vocabulary)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise DemoError(str(exc))
    print(f'{type(model).__name__} segmentor, {len(names)} classes: '
          f'{", ".join(names[:8])}{" ..." if len(names) > 8 else ""}')
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'classes.txt'), 'w') as f:
        f.write(''.join(f'{i}\t{n}\n' for i, n in enumerate(names)))
    return for_each_image(args, images, lambda path, stem: write_seg(
        None, None, None, args.out, stem, args.scale, inference_segmentor(model, path)),
        (ImageReadError, OSError))


def for_each_image(args, images: List[str], write, read_errors) -> List[str]:
    """``write(path, stem)`` for every image; unreadable images are skipped and counted."""
    os.makedirs(args.out, exist_ok=True)
    written, failed = [], []
    for path, stem in progress(list(zip(images, unique_stems(images))), len(images) > 1):
        try:
            written += write(path, stem)
        except read_errors as exc:
            print(f'skipping {path}: {exc}', file=sys.stderr)
            failed.append(path)
    print(f'wrote {len(written)} files to {args.out}')
    if failed:
        raise DemoError(f'{len(failed)} of {len(images)} images could not be read: '
                        f'{", ".join(failed[:5])}')
    return written


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    try:
        return run(args)
    except DemoError as exc:
        sys.exit(f'demo.py: error: {exc}')


if __name__ == '__main__':
    main()
