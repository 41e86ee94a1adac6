"""Export an aligned image tower to a plain open_clip checkpoint.

    python tools/model_converters/densevlm_to_open_clip.py CHECKPOINT --base BASE_CLIP_CKPT \
        --model NAME --out OUT.pt

CHECKPOINT: a work-dir checkpoint of DenseVLM / CLIPSelf / RegionCLIP (``epoch_N.pth``; the
student ``backbone.visual.*`` is taken, the rest ignored) or any image-tower checkpoint.
BASE_CLIP_CKPT: the full CLIP file the student started from (open_clip file or EVA-CLIP release):
its text tower and ``logit_scale`` are kept. OUT (``.pt`` or ``.safetensors``) loads strictly with
stock ``open_clip.create_model(NAME, pretrained=OUT)``.
"""
import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help='aligned checkpoint (work_dirs/<exp>/epoch_N.pth)')
    parser.add_argument('--base', required=True, help='full CLIP checkpoint giving the text tower')
    parser.add_argument('--model', required=True, help='open_clip model name, e.g. EVA02-B-16')
    parser.add_argument('--out', required=True, help='output file (.pt or .safetensors)')
    parser.add_argument('--prefix', default=None,
                        help="key prefix of the image tower in CHECKPOINT (default: automatic, "
                             "'backbone.' for work dirs)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from densevlm_mm.models.backbones.export import export_open_clip
    from densevlm_mm.utils.checkpoint import CheckpointError
    try:
        info = export_open_clip(args.checkpoint, args.base, args.model, args.out, args.prefix)
    except (CheckpointError, FileNotFoundError, IsADirectoryError, ValueError) as exc:
        print(f'densevlm_to_open_clip.py: error: {exc}', file=sys.stderr)
        return 1
    print(f'wrote {info["out"]}: image tower from {args.checkpoint} ({info["source"]}, '
          f'{info["num_visual"]} tensors) + text tower and the rest from {args.base} '
          f'({info["num_other"]} tensors). Load it with '
          f'open_clip.create_model({args.model!r}, pretrained={info["out"]!r}).')
    return 0


if __name__ == '__main__':
    sys.exit(main())
