"""Re-save a trusted legacy checkpoint so that it loads with ``weights_only=True``.

    python tools/model_converters/to_safe_checkpoint.py IN.pt OUT.pt [--safetensors]

Only run this on files you trust: reading IN unpickles it fully. OUT keeps the tensors of the
state dict (``state_dict`` / ``model`` / ``module`` wrappers, a ``module.`` prefix and OpenAI's JIT
scalar entries are removed). A TorchScript archive (OpenAI's CLIP ``.pt`` releases) is read with
open_clip's reader instead (no unpickling; every loader of this project reads those directly).
"""
import argparse

import torch

from densevlm_mm.utils.checkpoint import (drop_jit_scalars, is_torchscript_archive,
                                          load_checkpoint_file, unwrap_state_dict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    parser.add_argument('--safetensors', action='store_true', help='write safetensors')
    args = parser.parse_args()
    if is_torchscript_archive(args.src):
        state_dict = load_checkpoint_file(args.src)
    else:
        obj = torch.load(args.src, map_location='cpu', weights_only=False)
        state_dict = drop_jit_scalars(unwrap_state_dict(obj), args.src)
    sd = {k: v.contiguous() for k, v in state_dict.items() if torch.is_tensor(v)}
    if args.safetensors:
        from safetensors.torch import save_file
        save_file(sd, args.dst)
    else:
        torch.save(sd, args.dst)
    print(f'wrote {len(sd)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
