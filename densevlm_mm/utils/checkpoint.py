"""Safe checkpoint reading and reported (strict) loading.

A path given by a user is never unpickled with arbitrary objects: safetensors files are read with
safetensors, TorchScript archives (OpenAI's CLIP releases, e.g. ``ViT-B-16.pt``) with open_clip's
reader (``torch.jit.load``: TorchScript's own unpickler, no Python objects), and everything else
with ``torch.load(weights_only=True)`` (plus the few harmless classes mmengine writes into its
``meta``). Unreadable files raise an error naming the file and the reason; missing and unexpected
keys are reported (and raise when ``strict``), never silently ignored.

This module imports nothing from the rest of ``densevlm_mm`` (backbones, tools and the engine all
use it).
"""
import logging
import os
import os.path as osp
import pickle
import warnings
import zipfile
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import nn

WRAPPER_KEYS = ('state_dict', 'model', 'module')
#: scalars OpenAI's CLIP state dicts carry besides the weights (open_clip and mmseg drop them too)
JIT_SCALAR_KEYS = ('input_resolution', 'context_length', 'vocab_size')

_ZIP_MAGIC = b'PK\x03\x04'
_FILE_SIGNATURES = {  # leading bytes of common non-checkpoint files -> what they are
    b'\xff\xd8\xff': 'a JPEG image',
    b'\x89PNG': 'a PNG image',
    b'GIF8': 'a GIF image',
    b'%PDF': 'a PDF document',
    b'\x1f\x8b': 'a gzip archive',
    b'{': 'a JSON/text file',
    b'#': 'a text file',
}


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or does not match the model it is loaded into."""


def _sniff(path: str) -> bytes:
    with open(path, 'rb') as f:
        return f.read(16)


def _is_safetensors(head: bytes, path: str) -> bool:
    """safetensors: 8-byte little-endian header length, then a JSON header starting with ``{``."""
    if path.endswith('.safetensors'):
        return True
    if len(head) < 9 or head[8:9] != b'{':
        return False
    n = int.from_bytes(head[:8], 'little')
    return 0 < n <= osp.getsize(path) - 8


def is_torchscript_archive(path: str) -> bool:
    """Whether ``path`` is a TorchScript zip (``torch.jit.save``; OpenAI's CLIP ``.pt`` releases).

    The test ``torch.load`` itself uses: a ``constants.pkl`` record in the archive's folder.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split('/')[-1] == 'constants.pkl' and name.count('/') <= 1
                       for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _read_torchscript(path: str, map_location: str) -> Dict:
    """The state dict of a TorchScript archive, read by open_clip's checkpoint reader.

    ``open_clip.factory.load_state_dict`` loads the archive with ``torch.jit.load`` (``torch.load``
    dispatches TorchScript zips to it; no Python unpickling) and drops the JIT scalar entries
    (:data:`JIT_SCALAR_KEYS`). Only called on files :func:`is_torchscript_archive` accepted.
    """
    from open_clip.factory import load_state_dict as open_clip_load_state_dict
    try:
        with warnings.catch_warnings():  # torch's "dispatching to torch.jit.load" and deprecations
            warnings.simplefilter('ignore', UserWarning)
            warnings.simplefilter('ignore', FutureWarning)
            state_dict = open_clip_load_state_dict(path, device=map_location, weights_only=False)
    except StopIteration:  # open_clip looks at the first key
        raise CheckpointError(f'{path!r} is a TorchScript archive without any weights; pass the '
                              'CLIP checkpoint (e.g. OpenAI\'s ViT-B-16.pt).') from None
    except (RuntimeError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f'{path!r} is a TorchScript archive (the format of OpenAI\'s CLIP '
                              f'releases) that torch.jit.load cannot read ({exc}); it may be '
                              'truncated or corrupt. Download it again.') from exc
    print_log(f'{path!r} is a TorchScript archive (OpenAI CLIP release format): read with '
              "open_clip's reader, which drops the JIT scalar entries "
              f'{"/".join(JIT_SCALAR_KEYS)}', logger='current', level=logging.INFO)
    return dict(state_dict)


def drop_jit_scalars(state_dict: Mapping, path: str = '<state dict>') -> Dict:
    """Remove OpenAI's JIT scalar entries (:data:`JIT_SCALAR_KEYS`: one-element tensors, not
    weights) from a state dict, with one log line naming them."""
    found = [k for k in JIT_SCALAR_KEYS
             if torch.is_tensor(state_dict.get(k)) and state_dict[k].numel() == 1]
    if not found:
        return dict(state_dict)
    print_log(f'{path!r}: dropped the OpenAI JIT scalar entries {found} (not weights)',
              logger='current', level=logging.INFO)
    return {k: v for k, v in state_dict.items() if k not in found}


def read_checkpoint(path: str, map_location: str = 'cpu') -> Dict:
    """Read a checkpoint file safely and return what it holds (not unwrapped).

    Accepts ``torch.save`` files (zip or legacy format; raw state dicts, open_clip / CLIPSelf
    training dicts, mmengine work-dir checkpoints with ``state_dict`` and ``meta``), safetensors
    files (any extension) and TorchScript archives (OpenAI's CLIP releases such as
    ``ViT-B-16.pt``: their state dict, through open_clip's reader, without the JIT scalars).

    Args:
        path: local file.
        map_location: device for the tensors.

    Returns:
        The stored dict (a safetensors file gives its flat tensor dict).

    Raises:
        FileNotFoundError: the path does not exist.
        IsADirectoryError: the path is a directory.
        CheckpointError: empty, truncated or not a checkpoint (e.g. an image), a TorchScript
            archive ``torch.jit.load`` cannot read, or it holds pickled Python objects beyond
            tensors and plain containers (the message names the re-saving tool).
    """
    path = os.fspath(path)
    if not osp.exists(path):
        raise FileNotFoundError(f'checkpoint file not found: {path!r}. Pass the local path of a '
                                'checkpoint (nothing is downloaded at run time).')
    if osp.isdir(path):
        raise IsADirectoryError(f'checkpoint path {path!r} is a directory; pass the checkpoint '
                                'file inside it (e.g. work_dirs/<exp>/epoch_6.pth).')
    if osp.getsize(path) == 0:
        raise CheckpointError(f'checkpoint file {path!r} is empty (0 bytes); the download or '
                              'save was interrupted. Save or download it again.')
    head = _sniff(path)
    if _is_safetensors(head, path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(path, device=str(map_location))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f'{path!r} is not a readable safetensors file ({exc}); it may '
                                  'be truncated. Save or download it again.') from exc
    is_zip = head.startswith(_ZIP_MAGIC)
    if not is_zip and not head.startswith(b'\x80'):  # neither torch zip nor a pickle stream
        what = next((v for k, v in _FILE_SIGNATURES.items() if head.startswith(k)),
                    'not a PyTorch or safetensors checkpoint')
        raise CheckpointError(f'{path!r} is {what}, not a model checkpoint (expected a file '
                              'written by torch.save or safetensors).')
    if is_zip and not zipfile.is_zipfile(path):
        raise CheckpointError(f'checkpoint file {path!r} is truncated or corrupt (its zip '
                              'directory is missing); save or download it again.')
    if is_zip and is_torchscript_archive(path):
        return _read_torchscript(path, map_location)
    allow_mmengine_checkpoint_meta()
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if 'weights only' in str(exc).lower() or 'weights_only' in str(exc):
            reason = next((line.strip() for line in str(exc).splitlines()
                           if 'WeightsUnpickler error' in line), str(exc))
            raise CheckpointError(
                f'{path!r} cannot be read with torch.load(weights_only=True): {reason}\n'
                'It contains pickled Python objects beyond tensors. If you trust the file, re-save '
                'its tensors with `python tools/model_converters/to_safe_checkpoint.py '
                f'{path} OUT.pt` and pass OUT.pt.') from exc
        raise CheckpointError(f'{path!r} is not a readable PyTorch checkpoint ({exc}); it may '
                              'be truncated or of another format.') from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f'checkpoint file {path!r} is truncated or corrupt ({exc}); save '
                              'or download it again.') from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'{path!r} holds a {type(obj).__name__}, not a dict of tensors; '
                              'save model.state_dict() (or a dict with "state_dict").')
    return obj


def load_checkpoint_file(path: str, map_location: str = 'cpu', unwrap: bool = True) -> Dict:
    """Read a checkpoint safely (:func:`read_checkpoint`) and return its state dict.

    Args:
        path: ``.safetensors``, ``.pt``/``.pth``/``.bin`` file.
        map_location: device for the tensors.
        unwrap: take the first of ``state_dict`` / ``model`` / ``module`` when the file is a
            training checkpoint (open_clip, CLIPSelf/DenseVLM, mmengine), strip a leading
            ``module.`` and drop OpenAI's JIT scalar entries (:func:`drop_jit_scalars`).
    """
    obj = read_checkpoint(path, map_location=map_location)
    return drop_jit_scalars(unwrap_state_dict(obj), path) if unwrap else dict(obj)


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


def describe_keys(keys: Sequence[str], n: int = 5) -> str:
    """``'12 (first: [a, b, ...])'``."""
    keys = list(keys)
    return f'{len(keys)} (first: {keys[:n]})' if keys else '0'


def shape_mismatches(target: Mapping, state_dict: Mapping) -> Dict[str, str]:
    """``{key: '[a, b] in the checkpoint vs [c, d] in the model'}`` for every key both state dicts
    hold with different shapes (``load_state_dict`` would raise a bare size-mismatch error)."""
    out = {}
    for key, value in state_dict.items():
        own = target.get(key)
        if torch.is_tensor(value) and torch.is_tensor(own) and value.shape != own.shape:
            out[key] = f'{list(value.shape)} in the checkpoint vs {list(own.shape)} in the model'
    return out


def load_and_account(module: nn.Module, state_dict: Mapping) -> Tuple[Dict, object]:
    """``module.load_state_dict(strict=False)`` without its size-mismatch error.

    Keys whose shapes differ from the module's are left out of the load (they stay as initialised)
    and listed with their shapes; missing / unexpected keys are those of ``load_state_dict``
    (load hooks included).

    Returns:
        ``(dict(missing=[...], unexpected=[...], shape_mismatch=['key: [..] in the checkpoint vs
        [..] in the model', ...]), result)``, ``result`` being ``load_state_dict``'s
        ``_IncompatibleKeys``.
    """
    shapes = shape_mismatches(module.state_dict(), state_dict)
    result = module.load_state_dict({k: v for k, v in state_dict.items() if k not in shapes},
                                    strict=False)
    return dict(missing=[k for k in result.missing_keys if k not in shapes],
                unexpected=list(result.unexpected_keys),
                shape_mismatch=[f'{k}: {v}' for k, v in shapes.items()]), result


def describe_account(account: Mapping[str, List[str]]) -> str:
    """``'2 (first: [...]) missing keys; 1 (first: [...]) tensors of another shape'`` (empty
    when everything matched)."""
    parts = []
    if account.get('missing'):
        parts.append(f'{describe_keys(account["missing"])} missing keys')
    if account.get('unexpected'):
        parts.append(f'{describe_keys(account["unexpected"])} unexpected keys')
    if account.get('shape_mismatch'):
        parts.append(f'{describe_keys(account["shape_mismatch"], n=3)} tensors of another shape')
    return '; '.join(parts)


def load_state_dict_reported(module: nn.Module,
                             state_dict: Mapping,
                             strict: bool = True,
                             name: Optional[str] = None,
                             hint: Optional[str] = None) -> nn.modules.module._IncompatibleKeys:
    """``module.load_state_dict`` that names missing / unexpected keys and shape mismatches.

    Args:
        module: target.
        state_dict: weights.
        strict: raise on any missing or unexpected key or other shape (else log them; tensors of
            another shape are not loaded).
        name: what is loaded from where, for the message (e.g. ``"EVA02-B-16 from 'x.pt'"``).
        hint: the fix to suggest; default: check the model name or convert the file.

    Raises:
        CheckpointError: with ``strict=True`` when any key is missing or unexpected, or a tensor
            has another shape.
    """
    account, result = load_and_account(module, state_dict)
    what = name or type(module).__name__
    problems = describe_account(account)
    if problems:
        msg = f'loading weights into {what}: ' + problems
        if strict:
            raise CheckpointError(msg + '. ' + (hint or 'Check that the checkpoint matches the '
                                                'model name, or convert it with '
                                                'tools/model_converters/.'))
        print_log(msg, logger='current', level=logging.WARNING)
    return result


def load_model_checkpoint(model: nn.Module,
                          path: str,
                          strict: bool = True,
                          prefix_map: Optional[Mapping[str, Optional[str]]] = None,
                          map_location: str = 'cpu') -> Dict[str, List[str]]:
    """Load a work-dir checkpoint of this project into a whole (mmengine) model.

    The weights are the checkpoint's ``state_dict`` (or ``model`` / ``module``; a DDP ``module.``
    prefix is stripped). Keys the model drops from its own state dict on purpose (the frozen
    P-VLM / crop teacher, filled from the live model by their load hooks) are not reported.

    Args:
        model: the built model (e.g. ``runner.model``; a DDP wrapper is unwrapped).
        path: checkpoint file (``work_dirs/<exp>/epoch_N.pth``, ``.pt``, ``.safetensors``).
        strict: raise when any key is missing or unexpected or a tensor has another shape;
            ``False`` loads the matching keys and logs the rest.
        prefix_map: key renaming applied first, ``{old_prefix: new_prefix}``, longest prefix
            first; a ``None`` value drops the keys with that prefix. E.g. ``{'backbone.':
            'backbone.clip.'}`` or ``{'target_generator.': None}``.
        map_location: device for the tensors.

    Returns:
        ``dict(missing=[...], unexpected=[...])`` key lists (empty when everything matched), plus
        ``shape_mismatch=[...]`` when some tensor has another shape (not loaded).

    Raises:
        FileNotFoundError / IsADirectoryError / CheckpointError: unreadable file
            (:func:`read_checkpoint`).
        CheckpointError: ``strict`` and keys or shapes do not match; the message names the file,
            the model class, the missing / unexpected / other-shape keys (first few + counts) and
            the fix (``--no-strict`` / ``strict=False``, or ``prefix_map``).
    """
    target = getattr(model, 'module', model)
    if not isinstance(target, nn.Module):
        target = model
    state_dict = load_checkpoint_file(path, map_location=map_location)
    if prefix_map:
        state_dict = rename_prefixes(state_dict, prefix_map)
    account, _ = load_and_account(target, state_dict)
    problems = describe_account(account)
    if problems:
        msg = f'checkpoint {path!r} does not match {type(target).__name__}: ' + problems
        if strict:
            raise CheckpointError(
                msg + '. Check that the config builds the model the checkpoint was trained with; '
                'pass --no-strict (tools) / strict=False to load the matching keys anyway, or '
                'prefix_map to rename key prefixes.')
        print_log(msg + ' (strict=False: loaded the matching keys)', logger='current',
                  level=logging.WARNING)
    else:
        print_log(f'loaded {len(state_dict)} tensors from {path!r} into '
                  f'{type(target).__name__}', logger='current')
    if not account['shape_mismatch']:
        del account['shape_mismatch']
    return account


def load_weights_strictly(model: nn.Module, path: str, strict: bool = True) -> Dict[str, List[str]]:
    """The checkpoint loading of the tools (``tools/train.py``'s ``load_from``, ``tools/test.py``'s
    CHECKPOINT): :func:`load_model_checkpoint`, with every failure — a missing, unreadable or
    unsafe file, keys or shapes that do not match — raised as one :class:`CheckpointError` whose
    message names the file and the fix (a tool prints it and exits with status 1).
    """
    try:
        return load_model_checkpoint(model, path, strict=strict)
    except CheckpointError:
        raise
    except (OSError, ValueError) as exc:
        raise CheckpointError(str(exc)) from exc


def rename_prefixes(state_dict: Mapping, prefix_map: Mapping[str, Optional[str]]) -> Dict:
    """Rename key prefixes ``{old: new}`` (longest first); ``new=None`` drops the key."""
    order = sorted(prefix_map, key=len, reverse=True)
    out = {}
    for key, value in state_dict.items():
        for old in order:
            if key.startswith(old):
                new = prefix_map[old]
                if new is not None:
                    out[new + key[len(old):]] = value
                break
        else:
            out[key] = value
    return out


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
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and name in ('min', 'max', 'mean', 'current'):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); only the statistics methods of '
        'mmengine.logging.HistoryBuffer are allowed when reading a checkpoint')


__all__ = ['CheckpointError', 'read_checkpoint', 'is_torchscript_archive', 'drop_jit_scalars',
           'JIT_SCALAR_KEYS', 'load_checkpoint_file', 'unwrap_state_dict',
           'load_state_dict_reported', 'load_model_checkpoint', 'load_weights_strictly',
           'rename_prefixes', 'describe_keys', 'shape_mismatches', 'load_and_account',
           'describe_account', 'allow_mmengine_checkpoint_meta']
