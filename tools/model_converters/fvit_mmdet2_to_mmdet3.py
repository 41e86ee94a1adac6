"""Convert a released CLIPSelf F-ViT checkpoint (mmdet 2.x keys) to this package's mmdet 3.x F-ViT.

    python tools/model_converters/fvit_mmdet2_to_mmdet3.py IN.pth OUT.pth [--config CFG]
                                                           [--allow-unmapped] [--verbose]

IN is read safely (``weights_only=True`` / safetensors; ``state_dict`` wrapper and ``module.``
removed). Every key is renamed, dropped with a reason, or reported unmapped (exit status 1 unless
``--allow-unmapped``); the key mapping is in ``densevlm_mm/models/detectors/mmdet2_converter.py``.
With ``--config`` (an F-ViT config of ``configs/fvit/``) the result is loaded strictly into the
model built from it (missing / unexpected keys are listed). Then evaluate with
``python tools/test.py CFG OUT.pth``: use ``background='embedding'`` in the box head (the released
heads have the text ``background`` column) and the reference's ImageNet pixel statistics.
"""
import argparse
import sys
from typing import List, Optional


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='CLIPSelf F-ViT checkpoint (mmdet 2.x)')
    parser.add_argument('dst', help='output checkpoint (.pth, or .safetensors)')
    parser.add_argument('--config', default=None,
                        help='F-ViT config whose model must accept the result strictly')
    parser.add_argument('--allow-unmapped', action='store_true',
                        help='write the result even when some keys have no mapping')
    parser.add_argument('--verbose', action='store_true', help='list every renamed key')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import torch

    from densevlm_mm.models.detectors.mmdet2_converter import convert_fvit_mmdet2_state_dict
    from densevlm_mm.utils import load_checkpoint_file

    state = load_checkpoint_file(args.src)
    new_sd, report = convert_fvit_mmdet2_state_dict(state)
    if args.verbose:
        for old, new in report['renamed'].items():
            print(f'renamed: {old} -> {new}')
    for key, reason in report['dropped'].items():
        print(f'dropped: {key} ({reason})')
    for key in report['unmapped']:
        print(f'unmapped: {key}', file=sys.stderr)
    print(f'{len(state)} keys: {len(report["renamed"])} renamed, {len(report["dropped"])} dropped, '
          f'{len(report["unmapped"])} unmapped')
    if report['unmapped'] and not args.allow_unmapped:
        print('refusing to write a partial conversion (pass --allow-unmapped to write anyway)',
              file=sys.stderr)
        return 1
    if args.config:
        from mmengine.config import Config
        from mmengine.registry import MODELS

        from densevlm_mm.utils import register_all_modules
        register_all_modules()
        cfg = Config.fromfile(args.config)
        cfg.model.backbone.pretrained = None  # weights come from the converted file
        model = MODELS.build(cfg.model)
        result = model.load_state_dict(new_sd, strict=False)
        if result.missing_keys or result.unexpected_keys:
            print(f'does not load into {args.config}: missing {result.missing_keys[:10]}, '
                  f'unexpected {result.unexpected_keys[:10]}', file=sys.stderr)
            return 1
        print(f'loads strictly into the model of {args.config}')
    new_sd = {k: v.contiguous() for k, v in new_sd.items()}
    if args.dst.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file(new_sd, args.dst)
    else:
        torch.save(dict(state_dict=new_sd, meta=dict(converted_from=args.src)), args.dst)
    print(f'wrote {len(new_sd)} tensors to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
