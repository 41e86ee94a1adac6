"""Convert a vendored EVA-CLIP checkpoint to open_clip ``EVA02-*`` (timm trunk) key names.

    python tools/model_converters/eva_clip_to_open_clip.py IN.pt OUT.pt [--check-model EVA02-B-16]

IN is read safely (``weights_only=True`` / safetensors; ``state_dict``/``model`` wrappers and a
``module.`` prefix are removed). OUT is a plain state dict (``.safetensors`` by extension). With
``--check-model`` the result is first loaded strictly into a randomly initialised open_clip model of
that name; when it does not fit (missing / unexpected keys, tensors of another shape), nothing is
written.
"""
import argparse
import sys

import torch

from densevlm_mm.models.backbones.eva_converter import convert_eva_clip_state_dict
from densevlm_mm.utils import load_checkpoint_file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='vendored EVA-CLIP checkpoint')
    parser.add_argument('dst', help='output file (.pt / .pth / .safetensors)')
    parser.add_argument('--check-model', default=None,
                        help='open_clip model name to load the result into strictly')
    args = parser.parse_args()

    new_sd, unmapped = convert_eva_clip_state_dict(load_checkpoint_file(args.src))
    for key in unmapped:
        print(f'unmapped: {key}', file=sys.stderr)
    new_sd = {k: v.contiguous() for k, v in new_sd.items()}
    if args.check_model:  # before writing: a failed check leaves no output file
        from densevlm_mm.models.clip_factory import build_clip_model, load_clip_weights
        from densevlm_mm.utils.checkpoint import CheckpointError
        try:
            load_clip_weights(build_clip_model(args.check_model), args.src, state_dict=new_sd)
        except CheckpointError as exc:
            print(f'eva_clip_to_open_clip.py: error: {exc}\nnothing written to {args.dst}; pass '
                  f'the --check-model of the checkpoint (e.g. EVA02-L-14-336 for an L/14 file at '
                  '336 px).', file=sys.stderr)
            return 1
        print(f'the result loads strictly into {args.check_model}')
    if args.dst.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file(new_sd, args.dst)
    else:
        torch.save(new_sd, args.dst)
    print(f'wrote {len(new_sd)} tensors to {args.dst} ({len(unmapped)} unmapped)')
    return 1 if unmapped else 0


if __name__ == '__main__':
    sys.exit(main())
