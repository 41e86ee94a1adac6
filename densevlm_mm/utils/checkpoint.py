"""Safe checkpoint reading.

A path given by a user is never unpickled with arbitrary objects: ``.safetensors`` files are read
with safetensors and everything else with ``torch.load(weights_only=True)``. Missing and unexpected
keys are reported (and raise when ``strict``), never silently ignored.
"""
import os.path as osp
from typing import Dict, Mapping, Optional

import torch
from mmengine.logging import print_log
from torch import nn

WRAPPER_KEYS = ('state_dict', 'model', 'module')


def load_checkpoint_file(path: str, map_location: str = 'cpu', unwrap: bool = True) -> Dict:
    """Read a checkpoint safely and return its state dict.

    Args:
        path: ``.safetensors``, ``.pt``/``.pth``/``.bin`` file.
        map_location: device for the tensors.
        unwrap: take the first of ``state_dict`` / ``model`` / ``module`` when the file is a training
            checkpoint (open_clip, CLIPSelf/DenseVLM, mmengine) and strip a leading ``module.``.

    Raises:
        FileNotFoundError: the path does not exist.
        RuntimeError: the file holds pickled objects other than tensors and plain containers.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path!r}. Pass the local path of a '
                                'checkpoint (nothing is downloaded at run time).')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        obj = load_file(path, device=map_location)
    else:
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # the unpickler names the offending global
            raise RuntimeError(
                f'{path!r} cannot be read with torch.load(weights_only=True): {exc}\n'
                'It contains pickled Python objects beyond tensors. If you trust the file, re-save '
                'its tensors with `python tools/model_converters/to_safe_checkpoint.py '
                f'{path} OUT.pt` and pass OUT.pt.') from exc
    if unwrap:
        obj = unwrap_state_dict(obj)
    return obj


def unwrap_state_dict(obj: Mapping) -> Dict:
    """Take the weights out of a training checkpoint and strip a DDP ``module.`` prefix."""
    if not isinstance(obj, Mapping):
        raise TypeError(f'expected a dict-like checkpoint, got {type(obj).__name__}')
    for key in WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if obj and all(k.startswith('module.') for k in obj):
        obj = {k[len('module.'):]: v for k, v in obj.items()}
    return dict(obj)


def load_state_dict_reported(module: nn.Module,
                             state_dict: Mapping,
                             strict: bool = True,
                             name: Optional[str] = None) -> nn.modules.module._IncompatibleKeys:
    """``module.load_state_dict`` that names missing / unexpected keys.

    Raises:
        RuntimeError: with ``strict=True`` when any key is missing or unexpected.
    """
    result = module.load_state_dict(state_dict, strict=False)
    what = name or type(module).__name__
    problems = []
    if result.missing_keys:
        problems.append(f'{len(result.missing_keys)} missing keys (first: '
                        f'{result.missing_keys[:5]})')
    if result.unexpected_keys:
        problems.append(f'{len(result.unexpected_keys)} unexpected keys (first: '
                        f'{result.unexpected_keys[:5]})')
    if problems:
        msg = f'loading weights into {what}: ' + '; '.join(problems)
        if strict:
            raise RuntimeError(msg + '. Check that the checkpoint matches the model name, or '
                               'convert it with tools/model_converters/.')
        print_log(msg, logger='current', level=30)
    return result
