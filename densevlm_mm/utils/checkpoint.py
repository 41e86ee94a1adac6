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


def allow_mmengine_checkpoint_meta() -> None:
    """Let ``torch.load(weights_only=True)`` read the ``meta`` mmengine writes into checkpoints.

    torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls
    ``torch.load`` without the argument, so resuming (and ``load_from`` of a checkpoint written by
    the Runner) fails on the ``message_hub`` state: ``HistoryBuffer`` objects holding numpy arrays,
    and the statistics functions ``HistoryBuffer.min/max/mean/current`` pickled as
    ``getattr(HistoryBuffer, 'min')``. Exactly these are allow-listed (``getattr`` only through
    :func:`_history_buffer_getattr`); the loading stays ``weights_only`` (no arbitrary unpickling).
    """
    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer

    multiarray = (np._core if hasattr(np, '_core') else np.core).multiarray
    safe = [HistoryBuffer, np.ndarray, np.dtype, (_history_buffer_getattr, 'builtins.getattr')]
    for name in ('_reconstruct', 'scalar'):  # numpy 2 pickles `numpy._core`, numpy 1 `numpy.core`
        for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
            safe.append((getattr(multiarray, name), f'{module}.{name}'))
    for dtype in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
                  np.uint8, np.bool_):
        safe.append(type(np.dtype(dtype)))  # numpy.dtypes.Float64DType, ... (set in BUILD)
    torch.serialization.add_safe_globals(safe)


def _history_buffer_getattr(obj, name):
    """``getattr`` for the weights-only unpickler, limited to ``HistoryBuffer``'s statistics."""
    import pickle

    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and name in ('min', 'max', 'mean', 'current'):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); only the statistics methods of '
        'mmengine.logging.HistoryBuffer are allowed when reading a checkpoint')
