"""Convert an open_clip OpenAI-style ViT (or a DenseVLM student) to the weights file of mmseg's SAN.

    python tools/model_converters/open_clip_to_san.py SRC DST [--base OPEN_CLIP_CKPT]
        [--split N] [--config configs/san/....py]

SRC: an open_clip CLIP checkpoint (e.g. OpenAI's released ``ViT-B-16.pt``, a TorchScript archive,
or its state dict) or a DenseVLM work-dir checkpoint (student image tower under
``backbone.visual.*``; then ``--base`` gives the text tower, which DenseVLM does not train). Read
safely (``weights_only`` / safetensors / open_clip's TorchScript reader; OpenAI's JIT scalar
entries are dropped). The result equals what mmseg's ``tools/model_converters/clip2mmseg.py``
writes for the same file. DST: a plain state dict with SAN's ``image_encoder.* /
decode_head.rec_with_attnbias.* / text_encoder.*`` keys, the ``pretrained`` file of
``configs/san/``. ``--split``: image blocks kept in SAN's image encoder (default 9 for 12-block, 18
for 24-block towers, as mmseg's SAN configs). ``--config``: build that SAN config's model and
require every CLIP-holding key to be provided with the right shape (checked before DST is written:
a failed check writes nothing). Exit status 1 when a source key is unmapped or the config check
fails.
"""
import argparse
import sys

import torch

from densevlm_mm.models.segmentors.san_converter import (check_san_keys, convert_open_clip_to_san,
                                                         num_visual_layers,
                                                         open_clip_state_dict_from_checkpoint)
from densevlm_mm.utils import load_checkpoint_file
from densevlm_mm.utils.checkpoint import CheckpointError

DEFAULT_SPLIT = {12: 9, 24: 18}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='open_clip or DenseVLM work-dir checkpoint')
    parser.add_argument('dst', help='output .pth (SAN keys)')
    parser.add_argument('--base', default=None,
                        help='open_clip checkpoint giving the text tower (needed for DenseVLM '
                        'checkpoints, which hold the image tower only)')
    parser.add_argument('--split', type=int, default=None,
                        help='image blocks in SAN\'s image encoder (default 9 / 18 for 12 / 24 '
                        'blocks)')
    parser.add_argument('--config', default=None,
                        help='SAN config whose model must accept the result (key/shape check)')
    args = parser.parse_args(argv)

    try:
        base = load_checkpoint_file(args.base) if args.base else None
        clip, source = open_clip_state_dict_from_checkpoint(load_checkpoint_file(args.src), base)
    except (CheckpointError, FileNotFoundError, IsADirectoryError, ValueError) as exc:
        print(f'open_clip_to_san.py: error: {exc}', file=sys.stderr)
        return 1
    depth = num_visual_layers(clip)
    split = args.split if args.split is not None else DEFAULT_SPLIT.get(depth)
    if split is None:
        parser.error(f'the image tower has {depth} blocks; pass --split (blocks kept in the '
                     'image encoder; SAN uses 3/4 of them)')
    if not any(not k.startswith('visual.') for k in clip):
        parser.error(f'{args.src!r} has no text tower; pass --base with the open_clip checkpoint '
                     'the student was initialised from')
    converted, unmapped = convert_open_clip_to_san(clip, visual_split=split)
    for key in unmapped:
        print(f'unmapped: {key}', file=sys.stderr)
    status = 1 if unmapped else 0
    if args.config:  # before writing: a failed check leaves no output file
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules

        cfg = Config.fromfile(args.config)
        register_all_modules(init_default_scope=False)
        init_default_scope(cfg.get('default_scope', 'mmseg'))
        model_cfg = cfg.model.copy()
        model_cfg.pretrained = None
        report = check_san_keys(converted, MODELS.build(model_cfg).state_dict())
        for what, keys in report.items():
            for key in keys:
                print(f'{what}: {key}', file=sys.stderr)
        if any(report.values()):
            print(f'open_clip_to_san.py: error: the conversion of {args.src!r} does not fit the '
                  f'model of {args.config} (listed above); nothing written to {args.dst}. Check '
                  'that the config names the CLIP model of the checkpoint (width, depth, patch '
                  'size) and --split.', file=sys.stderr)
            return 1
        print(f'every CLIP key of {args.config} is provided with its shape')
    torch.save({k: v.contiguous() for k, v in converted.items()}, args.dst)
    print(f'image tower from {source!r} ({depth} blocks, split {split}); wrote {len(converted)} '
          f'tensors to {args.dst} ({len(unmapped)} unmapped)')
    return status


if __name__ == '__main__':
    sys.exit(main())
