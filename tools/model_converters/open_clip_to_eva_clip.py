"""Convert an open_clip ``EVA02-*`` checkpoint (timm trunk) to the EVA-CLIP fork's key names.

    python tools/model_converters/open_clip_to_eva_clip.py IN.pt OUT.pt
        [--text-from CLIP.pt] [--check-model EVA02-B-16]

The inverse of ``eva_clip_to_open_clip.py``: the result loads into the EVA-CLIP fork (EVA-CLIP,
CLIPSelf, DenseVLM reference code, F-ViT). IN may be

* an open_clip state dict (``visual.trunk.*``, ``text.*``, ``logit_scale``), raw or wrapped;
* a training checkpoint of this project (``epoch_N.pth``: the aligned image tower under
  ``backbone.visual.trunk.*``); it holds no text tower, so add one with ``--text-from`` (the CLIP
  checkpoint the run started from, in either layout) to get a complete CLIP checkpoint.

Every key is accounted for: a ``visual.*`` key without a vendored counterpart is printed and the
exit status is 1. With ``--check-model`` the output is first converted back and loaded strictly
into a randomly initialised open_clip model of that name; when it does not fit, nothing is written.
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from densevlm_mm.models.backbones.eva_converter import (  # noqa: E402
    convert_eva_clip_state_dict, convert_open_clip_to_eva_clip_state_dict)
from densevlm_mm.utils import load_checkpoint_file  # noqa: E402


def open_clip_layout(path: str) -> dict:
    """A checkpoint as an open_clip state dict: training checkpoints give their ``backbone.*``
    image tower under ``visual.``; vendored EVA-CLIP files are converted."""
    sd = load_checkpoint_file(path)
    student = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    if student:
        return student
    if any(k.startswith(('visual.blocks.', 'visual.patch_embed.')) for k in sd):
        converted, unmapped = convert_eva_clip_state_dict(sd)
        if unmapped:
            raise SystemExit(f'{path}: {len(unmapped)} EVA-CLIP keys have no open_clip name: '
                             f'{unmapped[:8]}')
        return converted
    return sd


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='open_clip EVA02 checkpoint or an epoch_N.pth of this project')
    parser.add_argument('dst', help='output file (.pt / .pth / .safetensors)')
    parser.add_argument('--text-from', default=None,
                        help='CLIP checkpoint whose text tower and logit_scale are added (for '
                             'training checkpoints, which hold only the image tower)')
    parser.add_argument('--check-model', default=None,
                        help='open_clip model name to load the converted-back result into strictly')
    args = parser.parse_args(argv)

    sd = open_clip_layout(args.src)
    if args.text_from:
        text = {k: v for k, v in open_clip_layout(args.text_from).items()
                if not k.startswith('visual.')}
        if not text:
            raise SystemExit(f'{args.text_from} has no text tower (no keys outside visual.*)')
        sd = {**sd, **text}
    elif all(k.startswith('visual.') for k in sd):
        print(f'note: {args.src} holds only the image tower; the output has no text tower '
              '(add one with --text-from CLIP.pt)', file=sys.stderr)
    new_sd, unmapped = convert_open_clip_to_eva_clip_state_dict(sd)
    for key in unmapped:
        print(f'unmapped: {key}', file=sys.stderr)
    new_sd = {k: v.contiguous() for k, v in new_sd.items()}
    if args.check_model and not unmapped:  # before writing: a failed check leaves no output
        from densevlm_mm.models.clip_factory import build_clip_model, load_clip_weights
        from densevlm_mm.utils.checkpoint import CheckpointError
        try:  # converted back on load, strict
            load_clip_weights(build_clip_model(args.check_model), args.src, state_dict=new_sd)
        except CheckpointError as exc:
            print(f'open_clip_to_eva_clip.py: error: {exc}\nnothing written to {args.dst}; pass '
                  'the --check-model the checkpoint was made for.', file=sys.stderr)
            return 1
        print(f'the result converts back and loads strictly into {args.check_model}')
    if args.dst.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file(new_sd, args.dst)
    else:
        torch.save(new_sd, args.dst)
    print(f'wrote {len(new_sd)} tensors to {args.dst} ({len(unmapped)} unmapped)')
    return 1 if unmapped else 0


if __name__ == '__main__':
    sys.exit(main())
