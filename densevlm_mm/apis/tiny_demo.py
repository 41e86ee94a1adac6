"""The embedded default (``make demo``): tiny random-initialised models and synthetic data.

:func:`prepare_tiny_demo` writes the files the tiny demo config reads (a generated panoptic image
set, random tiny student / P-VLM checkpoints, their class text embeddings) and can first teach
the random P-VLM the synthetic classes (:func:`teach_teacher`, a short supervised loop);
:func:`load_tiny_demo_config` points the config at them. An application-level helper: it uses
the datasets, the models and the text embeddings, and nothing below imports it.
"""
import json
import os
import os.path as osp

STUDENT, TEACHER = 'densevlm-tiny-eva02', 'densevlm-tiny-eva02-teacher'
DEFAULT_ROOT = 'work_dirs/tiny_demo'
_CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')
CONFIG = osp.join(_CONFIGS, 'densevlm', 'densevlm_tiny_demo.py')
CATSEG_CONFIG = osp.join(_CONFIGS, 'catseg', 'catseg_tiny_demo.py')
FVIT_CONFIG = osp.join(_CONFIGS, 'fvit', 'fvit_tiny_demo.py')


def prepare_tiny_demo(root: str, num_images: int = 32, seed: int = 0,
                      teach_steps: int = 0) -> dict:
    """Create (once) the data, the tiny checkpoints and the text embeddings under ``root``.

    With ``teach_steps > 0`` the random P-VLM is first taught the synthetic classes (supervised,
    on the annotated regions; see :func:`teach_teacher`) so that its retrieval is informative and
    the demo shows the student learning from it. Without, both models stay random.
    """
    import torch

    from densevlm_mm.datasets.synthetic_panoptic import make_synthetic_panoptic
    from densevlm_mm.models.clip_factory import create_clip
    from densevlm_mm.text_embeddings import generate_text_embedding_file

    data = osp.join(root, 'data')
    if not osp.isfile(osp.join(data, 'panoptic.json')):
        print(f'[demo] writing {num_images} synthetic panoptic images to {data}')
        make_synthetic_panoptic(data, num_images=num_images, image_size=(96, 128), seed=seed)
    vocab = osp.join(data, 'vocabulary.json')
    for role, name, offset in (('student', STUDENT, 1), ('teacher', TEACHER, 2)):
        ckpt = osp.join(root, 'checkpoints', f'{role}.pt')
        if not osp.isfile(ckpt):
            print(f'[demo] random-initialising {role} {name} -> {ckpt}')
            torch.manual_seed(seed + offset)
            model, _ = create_clip(name)
            os.makedirs(osp.dirname(ckpt), exist_ok=True)
            torch.save(model.state_dict(), ckpt)
        text = osp.join(root, 'text', f'{role}_vocabulary.pt')
        if not osp.isfile(text):
            print(f'[demo] encoding the vocabulary with the {role} text tower -> {text}')
            generate_text_embedding_file(name, ckpt, vocab, text, progress=False)
    marker = osp.join(root, 'checkpoints', 'teacher.taught')
    if teach_steps > 0 and not osp.isfile(marker):
        teach_teacher(root, teach_steps, seed=seed)
        open(marker, 'w').close()
    return dict(data=data, vocabulary=vocab)


def teach_teacher(root: str, steps: int, lr: float = 2e-3, batch_size: int = 8,
                  seed: int = 0) -> str:
    """Make the tiny P-VLM competent on the synthetic classes.

    Its image tower is trained with cross-entropy between mask-pooled region features and its own
    (fixed) class text embeddings, on the annotated segments of the synthetic set — a stand-in for
    the CLIPSelf-refined P-VLM a real run loads. Updates ``checkpoints/teacher.pt`` in place.
    """
    import torch
    import torch.nn.functional as F

    from densevlm_mm.datasets import CocoPanopticRegionDataset
    from densevlm_mm.datasets.transforms import (LoadPanopticRegions, PackDenseVLMInputs,
                                                 ResizeLongestPad)
    from densevlm_mm.models import DenseVLMBackbone, DenseVLMDataPreprocessor
    from densevlm_mm.text_embeddings import load_text_embeddings

    data = osp.join(root, 'data')
    dataset = CocoPanopticRegionDataset(
        ann_file=osp.join(data, 'panoptic.json'), data_prefix=dict(img=osp.join(data, 'images'),
                                                                   seg=osp.join(data, 'panoptic')),
        pipeline=[LoadPanopticRegions(), ResizeLongestPad(128), PackDenseVLMInputs()])
    items = [dataset[i] for i in range(len(dataset))]
    ckpt = osp.join(root, 'checkpoints', 'teacher.pt')
    backbone = DenseVLMBackbone(TEACHER, pretrained=ckpt)
    text = F.normalize(load_text_embeddings(osp.join(root, 'text', 'teacher_vocabulary.pt'))
                       .embeddings, dim=-1)
    preprocess = DenseVLMDataPreprocessor()
    optim = torch.optim.AdamW(backbone.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    print(f'[demo] teaching the P-VLM the synthetic classes ({steps} steps)')
    backbone.train()
    for step in range(steps):
        pick = torch.randperm(len(items), generator=gen)[:batch_size].tolist()
        batch = preprocess(dict(inputs=[items[i]['inputs'] for i in pick],
                                data_samples=[items[i]['data_samples'] for i in pick]), True)
        samples = batch['data_samples']
        dense = backbone.dense_features(batch['inputs'])
        feats = backbone.mask_features(dense, [s.region_masks for s in samples])
        labels = torch.cat([s.region_labels for s in samples])
        loss = F.cross_entropy(F.normalize(feats, dim=-1) @ text.t() / 0.05, labels)
        optim.zero_grad()
        loss.backward()
        optim.step()
        if step % 20 == 0 or step == steps - 1:
            print(f'[demo]   step {step + 1}/{steps}: region cross-entropy {loss.item():.3f}')
    full = torch.load(ckpt, map_location='cpu', weights_only=True)
    full.update(backbone.state_dict())  # the image tower, under visual.*
    torch.save(full, ckpt)
    return ckpt


def _retarget(obj, old: str, new: str):
    """Replace the path prefix ``old`` by ``new`` in every string of a config."""
    if isinstance(obj, dict):
        return {k: _retarget(v, old, new) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_retarget(v, old, new) for v in obj)
    if isinstance(obj, str) and obj.startswith(old):
        return new + obj[len(old):]
    return obj


def load_tiny_demo_config(root: str = DEFAULT_ROOT, config: str = CONFIG):
    """The tiny demo config with its file paths moved from ``work_dirs/tiny_demo`` to ``root``."""
    from mmengine.config import Config

    cfg = Config.fromfile(config)
    root = root.rstrip('/')
    if root != DEFAULT_ROOT:
        cfg = Config(_retarget(cfg.to_dict(), DEFAULT_ROOT, root))
    return cfg


def _newest(pattern: str):
    import glob
    import re
    found = glob.glob(pattern)
    return max(found, key=lambda p: int(re.findall(r'\d+', osp.basename(p))[-1])) \
        if found else None


def demo_models(root: str = DEFAULT_ROOT, seed: int = 0) -> dict:
    """The tiny models of ``make demo`` under ``root``, for the API (and its guide): configs
    (``Config`` objects, paths moved to ``root``) and checkpoints of the aligned student, the
    tiny CAT-Seg and the tiny F-ViT.

    Where ``make demo`` has not run, :func:`prepare_tiny_demo` writes the data and the random tiny
    CLIPs, and random stand-ins of the stages' models are written once under
    ``<root>/standin/`` (random weights: their pictures mean nothing).

    Returns:
        dict: ``dense_config`` / ``dense`` (the newest ``train/epoch_N.pth``, else the student
        CLIP ``checkpoints/student.pt``), ``catseg_config`` / ``catseg``, ``fvit_config`` /
        ``fvit``, ``clip`` (the student CLIP whose text tower made the F-ViT class rows),
        ``image`` (the first generated image).
    """
    prepare_tiny_demo(root)
    root = root.rstrip('/')
    clip = osp.join(root, 'checkpoints', 'student.pt')
    images = osp.join(root, 'data', 'images')
    out = dict(dense_config=load_tiny_demo_config(root),
               dense=_newest(osp.join(root, 'train', 'epoch_*.pth')) or clip, clip=clip,
               image=osp.join(images, sorted(os.listdir(images))[0]),
               catseg_config=load_tiny_demo_config(root, CATSEG_CONFIG),
               fvit_config=load_tiny_demo_config(root, FVIT_CONFIG))
    standin = osp.join(root, 'standin')
    out['catseg'] = _newest(osp.join(root, 'segment', 'iter_*.pth'))
    if out['catseg'] is None:
        out['catseg'] = osp.join(standin, 'catseg_iter_0.pth')
        if not osp.isfile(out['catseg']):
            cfg = out['catseg_config'].copy()
            cfg.model.backbone.pretrained = cfg.model.text_encoder.pretrained = clip
            _save_standin(_build_standin(cfg, 'mmseg', seed), out['catseg'])
    fvit = out['fvit_config']
    out['fvit'] = _newest(osp.join(root, 'detect', 'epoch_*.pth'))
    if out['fvit'] is None or not osp.isfile(fvit.model.roi_head.bbox_head.text_embeddings):
        from densevlm_mm.datasets.synthetic_detection import CLASSES
        from densevlm_mm.text_embeddings import generate_text_embedding_file
        out['fvit'] = osp.join(standin, 'fvit_epoch_0.pth')
        text = osp.join(standin, 'fvit_classes.pt')
        fvit.model.roi_head.bbox_head.text_embeddings = text
        if not osp.isfile(out['fvit']):
            vocab = osp.join(standin, 'fvit_vocabulary.json')
            os.makedirs(standin, exist_ok=True)
            with open(vocab, 'w') as f:
                json.dump([dict(name=n, isthing=1) for n in CLASSES], f)
            generate_text_embedding_file(STUDENT, clip, vocab, text, progress=False)
            fvit.model.backbone.pretrained = clip
            _save_standin(_build_standin(fvit, 'densevlm_mm', seed), out['fvit'])
    return out


def _build_standin(cfg, scope: str, seed: int):
    """The config's model with random weights (seeded)."""
    import torch
    from mmengine.registry import DefaultScope

    from densevlm_mm.registry import MODELS
    from densevlm_mm.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg.model)


def _save_standin(model, path: str) -> None:
    import torch
    os.makedirs(osp.dirname(path), exist_ok=True)
    print(f'[demo] random stand-in of {type(model).__name__} -> {path}')
    torch.save(dict(meta=dict(standin=True), state_dict=model.state_dict()), path)
