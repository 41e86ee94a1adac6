"""Demo stage ``detect``: the aligned tiny student in a tiny F-ViT, OV-COCO-style table.

Writes a generated COCO-style detection set (4 thing classes of the align stage's images: person /
car base, dog / bottle novel) and the class text embeddings of the student's text tower under
``<work_dir>/detect``, trains ``configs/fvit/fvit_tiny_demo.py`` (backbone = the aligned student
checkpoint, frozen) with mmengine's Runner for a few iterations, tests it and prints
AP50 novel / base / all from mmdet's ``OVCocoMetric``.
"""
import os.path as osp
import time
from typing import Callable, Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'fvit', 'fvit_tiny_demo.py')
DEFAULT_ROOT = 'work_dirs/tiny_demo'
STUDENT = 'densevlm-tiny-eva02'


def format_table(metrics: dict) -> str:
    """The OV-COCO table (×100) from OVCocoMetric's ``bbox`` results."""
    def get(key):
        value = next((v for k, v in metrics.items() if k.split('/')[-1] == key), float('nan'))
        return 100.0 * float(value)
    row = (get('novel_ap50'), get('base_ap50'), get('bbox_mAP_50'))
    return ('| AP50 novel | AP50 base | AP50 all |\n|---|---|---|\n'
            f'| {row[0]:.1f} | {row[1]:.1f} | {row[2]:.1f} |')


def run(work_dir: str, student_checkpoint: Optional[str], log: Callable = print,
        config: str = CONFIG, num_train: int = 16, num_val: int = 8,
        cfg_options: Optional[dict] = None) -> dict:
    """Generate data, train and test the tiny F-ViT.

    Returns:
        dict: ``metrics`` (OVCocoMetric), ``table`` (markdown), ``losses`` (total loss per training
        iteration), ``checkpoint``, ``config``, ``data`` (fixture paths), ``text_embeddings``,
        ``seconds``.

    Args:
        work_dir: the demo's work dir (the align stage's ``checkpoints/student.pt`` gives the text
            tower when present; otherwise the text tower is random-initialised).
        student_checkpoint: backbone weights (the align stage's ``train/epoch_N.pth``, or any file
            ``DenseVLMBackbone(pretrained=...)`` accepts); ``None``: random init.
        cfg_options: extra config overrides (``Config.merge_from_dict``).
    """
    import torch
    from demo_stages import demo_runner_class
    Runner = demo_runner_class()

    from densevlm_mm.datasets.synthetic_detection import make_synthetic_detection
    from densevlm_mm.text_embeddings import generate_text_embedding_file, load_text_embeddings
    from densevlm_mm.utils import register_all_modules

    t0 = time.time()
    root = work_dir.rstrip('/')
    det = osp.join(root, 'detect')
    paths = make_synthetic_detection(osp.join(det, 'data'), num_train=num_train, num_val=num_val)
    text = osp.join(det, 'text', 'detect_classes.pt')
    if not osp.isfile(text) or load_text_embeddings(text).background is None:  # (re)write
        # files of earlier demo runs lack the background row the F-ViT configs use
        clip_ckpt = osp.join(root, 'checkpoints', 'student.pt')
        if not osp.isfile(clip_ckpt):
            clip_ckpt = None
            torch.manual_seed(0)
        log(f'[demo] encoding {", ".join(paths["classes"])} with the {STUDENT} text tower '
            f'({clip_ckpt or "random init"}) -> {text}')
        generate_text_embedding_file(STUDENT, clip_ckpt, paths['vocabulary_json'], text,
                                     progress=False)

    from densevlm_mm.apis.tiny_demo import load_tiny_demo_config
    register_all_modules(init_default_scope=False)
    cfg = load_tiny_demo_config(root, config)  # paths moved from work_dirs/tiny_demo to root
    cfg.model.backbone.pretrained = student_checkpoint
    cfg.work_dir = det
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # tested once, right after
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    log(f'[demo] tiny F-ViT: backbone {STUDENT} from {student_checkpoint or "random init"} (frozen)'
        f', {num_train} training images, base {paths["base_classes"]}, novel '
        f'{paths["novel_classes"]}')
    import contextlib
    import io
    runner = Runner.from_cfg(cfg)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' "loading annotations..." prints
        runner.train()
    history = runner.message_hub.get_scalar('train/loss')
    losses = [float(v) for v in history.data[0]] if history is not None else []
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' 30-line summary; table below
        metrics = runner.test()
    table = format_table(metrics)
    log('[demo] OV-COCO-style detection on the generated images (x100):\n' + table)
    log(f'[demo] detect stage: {time.time() - t0:.1f} s')
    ckpt = osp.join(det, f'epoch_{cfg.train_cfg.max_epochs}.pth')
    return dict(metrics=dict(metrics), table=table, losses=losses, checkpoint=ckpt, config=config,
                data=paths, text_embeddings=text, seconds=time.time() - t0)
