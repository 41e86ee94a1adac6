"""Convert a released CLIPSelf F-ViT checkpoint (mmdet 2.x keys) to this package's mmdet 3.x F-ViT.

    python tools/model_converters/fvit_mmdet2_to_mmdet3.py IN.pth OUT.pth [--config CFG]
                                                           [--allow-unmapped] [--verbose]

IN is read safely (``weights_only=True`` / safetensors; ``state_dict`` wrapper and ``module.``
removed). Every key is renamed, dropped with a reason, or reported unmapped (exit status 1 unless
``--allow-unmapped``); the key mapping is in ``densevlm_mm/models/detectors/mmdet2_converter.py``.
A checkpoint without RPN / RoI-head keys (a CLIP or DenseVLM image tower, or one already converted)
is refused. With ``--config`` (an F-ViT config of ``configs/fvit/``) the result is loaded strictly
into the model built from it (missing / unexpected keys and tensors of another shape are listed).
Nothing is written when a check fails. Then evaluate with
``python tools/test.py CFG OUT.pth``: use ``background='embedding'`` in the box head (the released
heads have the text ``background`` column) and the reference's ImageNet pixel statistics.
"""
import argparse
import sys
from typing import Dict, List, Optional


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


def not_an_fvit_checkpoint(state: Dict, report: Dict) -> Optional[str]:
    """Why ``state`` is no mmdet-2.x F-ViT checkpoint (``None`` when it is one): a detector has
    its RPN and RoI heads; a CLIP or DenseVLM image tower has only ``backbone.visual.*`` keys
    (every one of them is "renamed", so the conversion would report 0 unmapped keys)."""
    if any(k.startswith('neck.0.upsample') for k in state):
        return ('is already in this package\'s mmdet 3.x layout (neck.0.upsample_*): use it as it '
                'is (tools/test.py CONFIG CHECKPOINT)')
    if any(k.startswith(('rpn_head.', 'roi_head.')) for k in report['renamed']):
        return None
    tower = sum(k.startswith(('backbone.visual.', 'visual.')) for k in state)
    return (f'is not an F-ViT checkpoint: none of its {len(state)} keys belongs to an rpn_head or '
            f'roi_head ({tower} are image-tower keys). A CLIP / DenseVLM image tower is the '
            'backbone\'s `pretrained` weights of an F-ViT config (configs/fvit/), not a detector '
            'to convert')


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
    not_fvit = not_an_fvit_checkpoint(state, report)
    if not_fvit:
        print(f'fvit_mmdet2_to_mmdet3.py: error: {args.src!r} {not_fvit}; nothing written to '
              f'{args.dst}.', file=sys.stderr)
        return 1
    if report['unmapped'] and not args.allow_unmapped:
        print('refusing to write a partial conversion (pass --allow-unmapped to write anyway)',
              file=sys.stderr)
        return 1
    if args.config:
        from mmengine.config import Config
        from mmengine.registry import MODELS

        from densevlm_mm.utils import register_all_modules
        from densevlm_mm.utils.checkpoint import describe_account, load_and_account
        register_all_modules()
        cfg = Config.fromfile(args.config)
        cfg.model.backbone.pretrained = None  # weights come from the converted file
        problems = describe_account(load_and_account(MODELS.build(cfg.model), new_sd)[0])
        if problems:
            print(f'fvit_mmdet2_to_mmdet3.py: error: the conversion of {args.src!r} does not load '
                  f'into the model of {args.config}: {problems}; nothing written to {args.dst}. '
                  'Check that the config matches the checkpoint (backbone model_name, number of '
                  'classes of its text embeddings).', file=sys.stderr)
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
