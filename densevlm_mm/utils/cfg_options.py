"""``--cfg-options KEY=VALUE ...`` of the tools: parsed as mmengine's ``DictAction`` does, checked
against the config before it is merged.

mmengine merges any key: a misspelt one (``train_cfg.max_epoch=2``, ``modle.backbone...``) is
added beside the real one and nothing changes; a variable of the config file (``data_root``) was
already copied into the settings that use it when the file was read, so setting it changes
nothing either. And ``DictAction`` removes every space from a value (``'data_root=/my data'``
becomes ``/mydata``). Here:

* a value without list syntax (no ``[]``, ``()`` or ``,``) keeps its spaces; a list whose elements
  hold spaces is refused (mmengine's list parser cannot keep them: write it in a config file);
* a word without ``=`` (the shell split an unquoted value at a space) is refused with the quoting;
* a top-level key that is neither in the config nor read by mmengine's Runner or the tools is
  refused with the closest existing key; so is a top-level variable of the config file (with the
  settings that hold its value);
* a new key in an existing dict whose name is close to an existing one (``difflib`` ratio >= 0.85:
  ``max_epoch`` / ``max_epochs``) is refused as a misspelling; other new keys are allowed (new
  arguments, e.g. ``test_dataloader.dataset.subset=10``: the class that receives them refuses
  unknown ones).
"""
import difflib
import inspect
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from mmengine.config import Config, DictAction

__all__ = ['parse_cfg_options', 'check_cfg_options', 'merge_cfg_options', 'RUNNER_KEYS']

#: top-level keys read by mmengine's Runner (besides its ``__init__`` arguments, added below) and
#: by the tools of this project; they may be set even when the config does not name them
EXTRA_RUNNER_KEYS = ('activation_checkpointing', 'compile', 'efficient_conv_bn_eval',
                     'find_unused_parameters', 'model_wrapper_cfg', 'sync_bn', 'runner_type',
                     'load_strict')


def _runner_keys() -> frozenset:
    from mmengine.runner import Runner
    params = set(inspect.signature(Runner.__init__).parameters) - {'self', 'cfg'}
    return frozenset(params | set(EXTRA_RUNNER_KEYS))


RUNNER_KEYS = _runner_keys()

_QUOTE_HINT = ("quote the whole pair as one shell word, e.g. --cfg-options 'data_root=/my data/coco'")
_LIST_SYNTAX = re.compile(r'[\[\](),]')
_SPACE_IN_ELEMENT = re.compile(r'[^\s,\[\]()]\s+[^\s,\[\]()]')


def _parse_value(key: str, raw: str) -> Any:
    value = raw.strip('\'"')
    if not _LIST_SYNTAX.search(value):  # one value: keep its spaces (DictAction removes them)
        return DictAction._parse_int_float_bool(value)
    if _SPACE_IN_ELEMENT.search(value):
        raise ValueError(
            f'--cfg-options {key}={raw}: a list element holds a space, and mmengine\'s list syntax '
            'removes spaces ("my data" would become "mydata"). Write this value in a config file '
            f"that inherits yours (_base_ = ['your_config.py']; {key.split('.')[-1]} = [...]).")
    return DictAction._parse_iterable(value)


def parse_cfg_options(words: Union[Sequence[str], Mapping[str, Any]]) -> Dict[str, Any]:
    """``['a.b=1', 'c=x,y']`` → ``{'a.b': 1, 'c': ['x', 'y']}`` (mmengine's ``DictAction`` values;
    a dict is returned as it is).

    Raises:
        ValueError: a word without ``=`` or with an empty key, or a list with spaces inside an
            element; the message says how to write it.
    """
    if isinstance(words, Mapping):
        return dict(words)
    options: Dict[str, Any] = {}
    for word in words:
        key, sep, raw = word.partition('=')
        if not sep:
            raise ValueError(f'--cfg-options: {word!r} is not KEY=VALUE. When a value holds a '
                             f'space, the shell splits it into two words: {_QUOTE_HINT}.')
        if not key.strip():
            raise ValueError(f'--cfg-options: {word!r} has no key before "="')
        options[key.strip()] = _parse_value(key.strip(), raw)
    return options


def _closest(word: str, candidates: Iterable[str], cutoff: float) -> Optional[str]:
    found = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=cutoff)
    return found[0] if found else None


def _paths_with_value(node: Any, value: Any, prefix: str = '') -> List[str]:
    """Dotted paths under ``node`` whose value equals ``value`` (where a variable was copied)."""
    found = []
    items = node.items() if isinstance(node, Mapping) else \
        enumerate(node) if isinstance(node, (list, tuple)) else []
    for k, v in items:
        path = f'{prefix}.{k}' if prefix else str(k)
        try:
            same = v == value and type(v) is type(value)
        except Exception:  # e.g. arrays
            same = False
        if same:
            found.append(path)
        elif isinstance(v, (Mapping, list, tuple)):
            found.extend(_paths_with_value(v, value, path))
    return found


def check_cfg_options(cfg: Config, options: Mapping[str, Any]) -> None:
    """Refuse keys of ``options`` that would be merged into ``cfg`` without any effect.

    Raises:
        ValueError: naming the key, the closest existing key (or the settings holding a config
            variable's value) and how to write it.
    """
    plain = cfg.to_dict()
    for key in options:
        parts = key.split('.')
        top = parts[0]
        if top not in cfg:
            if top in RUNNER_KEYS:
                continue
            close = _closest(top, list(cfg.keys()) + list(RUNNER_KEYS), 0.6)
            raise ValueError(
                f'--cfg-options {key}: the config has no key {top!r}'
                + (f'; did you mean {close!r}?' if close else '.')
                + ' A top-level key that the config does not have and the Runner does not read '
                'would be ignored.')
        if top not in RUNNER_KEYS:
            places = [p for p in _paths_with_value(plain, plain[top])
                      if p.split('.')[0] != top]
            where = (f' (its value is in {", ".join(places[:4])}'
                     f'{", ..." if len(places) > 4 else ""})' if places else '')
            rest = ''.join(f'.{p}' for p in parts[1:])
            example = f', e.g. --cfg-options {places[0]}{rest}=NEW_VALUE' if places else ''
            raise ValueError(
                f'--cfg-options {key}: {top!r} is a variable of the config file: its value was '
                f'copied into the settings that use it when the file was read{where}, so setting '
                f'it here changes nothing. Set those settings instead{example}.')
        node: Any = cfg[top]
        for depth, part in enumerate(parts[1:], 1):
            here = '.'.join(parts[:depth])
            if isinstance(node, (list, tuple)):
                if not part.isdigit() or int(part) >= len(node):
                    raise ValueError(f'--cfg-options {key}: {here} is a list of {len(node)} '
                                     f'items; {part!r} is not an index of it (0..{len(node) - 1}).')
                node = node[int(part)]
            elif isinstance(node, Mapping):
                if part in node:
                    node = node[part]
                    continue
                close = _closest(part, [str(k) for k in node], 0.85)
                if close is not None:
                    raise ValueError(
                        f'--cfg-options {key}: {here} has no key {part!r}; did you mean '
                        f'{here}.{close}? (A new key would be added beside it and change '
                        'nothing. To add a key of that name on purpose, write it in a config file '
                        'that inherits yours.)')
                break  # a new key in an existing dict: a new argument
            else:
                break


def merge_cfg_options(cfg: Config, options: Union[Sequence[str], Mapping[str, Any], None]) -> None:
    """Parse (:func:`parse_cfg_options`), check (:func:`check_cfg_options`) and merge
    ``--cfg-options`` into ``cfg``; ``None`` does nothing."""
    if options is None:
        return
    options = parse_cfg_options(options)
    check_cfg_options(cfg, options)
    cfg.merge_from_dict(options)
