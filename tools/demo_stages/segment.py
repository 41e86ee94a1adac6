"""Demo stage ``segment``: the aligned tiny student inside a tiny CAT-Seg, trained and evaluated.

Writes the generated segmentation images (:func:`make_synthetic_segmentation`, 6 classes, 96x96)
under ``<work_dir>/seg_data``, builds ``configs/catseg/catseg_tiny_demo.py`` with the image tower
taken from the align stage's work-dir checkpoint (``model.backbone.pretrained``; random init when
there is none) and the text tower from the align stage's tiny CLIP (``<work_dir>/checkpoints/
student.pt`` when present), evaluates mIoU, trains a few iterations with mmengine's Runner under
``<work_dir>/segment`` and evaluates again.
"""
import os.path as osp
import time
from typing import Callable, Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'catseg', 'catseg_tiny_demo.py')


def run(work_dir: str, student_checkpoint: Optional[str], log: Callable = print,
        max_iters: Optional[int] = None, num_threads: Optional[int] = 1) -> dict:
    """Train and evaluate the tiny CAT-Seg.

    Args:
        num_threads: torch CPU threads during the stage (restored after). The tiny model's ops are
            so small that one thread is faster than two, much faster on a loaded machine.

    Returns:
        ``dict(before, after, checkpoint, seconds, losses)``: mIoU (%) before / after training, the
        trained CAT-Seg checkpoint, the stage's wall time and the per-iteration training losses.
    """
    import torch
    threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        return _run(work_dir, student_checkpoint, log, max_iters)
    finally:
        torch.set_num_threads(threads)


def _run(work_dir: str, student_checkpoint: Optional[str], log: Callable,
         max_iters: Optional[int]) -> dict:
    t0 = time.time()
    from mmengine.config import Config
    from demo_stages import demo_runner_class
    Runner = demo_runner_class()

    from densevlm_mm.datasets.synthetic_segmentation import make_synthetic_segmentation

    seg_root = osp.join(work_dir, 'seg_data')
    info = make_synthetic_segmentation(seg_root, num_images=16, size=96, num_classes=6, seed=0)
    cfg = Config.fromfile(CONFIG)
    cfg.work_dir = osp.join(work_dir, 'segment')
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = seg_root
    cfg.model.train_classes = list(info['classes'])
    if student_checkpoint is not None:
        if not osp.isfile(student_checkpoint):
            raise SystemExit(f'[demo] student checkpoint not found: {student_checkpoint}')
        cfg.model.backbone.pretrained = student_checkpoint
    text_ckpt = osp.join(work_dir, 'checkpoints', 'student.pt')
    cfg.model.text_encoder.pretrained = text_ckpt if osp.isfile(text_ckpt) else None
    if max_iters is not None:
        cfg.train_cfg.max_iters = max_iters
        cfg.param_scheduler[0].T_max = cfg.param_scheduler[0].end = max_iters
        cfg.default_hooks.checkpoint.interval = max_iters
    iters = cfg.train_cfg.max_iters
    cfg.train_cfg.val_begin = cfg.train_cfg.val_interval = iters + 1  # evaluated below instead
    log(f'[demo] tiny CAT-Seg ({cfg.clip_model}): image tower from '
        f'{student_checkpoint or "random init"}, text tower from '
        f'{cfg.model.text_encoder.pretrained or "random init"}; {iters} iterations on '
        f'{info["num_train"]} generated images of {len(info["classes"])} classes')
    runner = Runner.from_cfg(cfg)
    before = runner.val()['mIoU']
    runner.train()
    losses = [float(v) for v in runner.message_hub.get_scalar('train/loss').data[0]]
    after = runner.val()['mIoU']
    ckpt = osp.join(cfg.work_dir, f'iter_{iters}.pth')
    seconds = time.time() - t0
    log(f'[demo] tiny CAT-Seg mIoU on {info["num_val"]} generated images: before training '
        f'{before:.1f} %, after {iters} iterations {after:.1f} % ({seconds:.1f} s)')
    return dict(before=float(before), after=float(after), checkpoint=ckpt, seconds=seconds,
                losses=losses)
