"""Files of the embedded default (tiny random-initialised models, synthetic data)."""
import os
import os.path as osp

STUDENT, TEACHER = 'densevlm-tiny-eva02', 'densevlm-tiny-eva02-teacher'
DEFAULT_ROOT = 'work_dirs/tiny_demo'
CONFIG = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
                  'densevlm', 'densevlm_tiny_demo.py')


def prepare_tiny_demo(root: str, num_images: int = 32, seed: int = 0) -> dict:
    """Create (once) the data, the tiny checkpoints and the text embeddings under ``root``."""
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
    return dict(data=data, vocabulary=vocab)


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
