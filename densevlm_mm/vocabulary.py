"""Class vocabularies with an explicit thing/stuff split.

Formats accepted by :func:`load_vocabulary`:

* a bundled name (``'densevlm_316'``, ``'coco_panoptic_133'``, ``'coco_stuff_171'``,
  ``'densevlm_273'``, ``'ade20k_panoptic_150'``; see ``densevlm_mm/vocab_data/``);
* JSON: a list of objects with ``name`` and ``isthing`` (0/1 or bool; other keys are ignored), in
  row order — a list where no entry has ``isthing`` is rejected, one where only stuff entries omit
  it (COCO-Stuff-171 style) reads those as stuff; or ``{"names": [...], "is_thing": [...]}``;
  or a plain list of names (the detection vocabularies ``ovcoco_*`` / ``ovlvis_*``), read as
  object classes: every class a thing;
* text: one class per line, ``thing<TAB>name`` or ``stuff<TAB>name`` (names may contain commas).

A vocabulary without a thing/stuff flag for every class is rejected: DenseVLM's decoupled loss and
the Masks-T / Masks-S evaluation both need the split. So are vocabularies with an empty name, a
single class, or a name listed twice in the same group (see :func:`check_class_names`).
"""
import os
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch

from densevlm_mm.utils.files import load_json_file, read_text_file

BUNDLED_DIR = osp.join(osp.dirname(__file__), 'vocab_data')


@dataclass
class Vocabulary:
    """Class names in row order and a bool ``is_thing[C]`` flag per class."""
    names: List[str]
    is_thing: torch.Tensor

    def __post_init__(self) -> None:
        self.is_thing = torch.as_tensor(self.is_thing, dtype=torch.bool).flatten()
        if len(self.names) != self.is_thing.numel():
            raise ValueError(f'vocabulary has {len(self.names)} names but '
                             f'{self.is_thing.numel()} thing/stuff flags')
        if len(self.names) == 0:
            raise ValueError('vocabulary is empty')
        check_class_names(self.names, self.is_thing.tolist())

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_things(self) -> int:
        return int(self.is_thing.sum())


def check_class_names(names: Sequence[str], is_thing: Sequence[bool],
                      where: str = 'vocabulary') -> None:
    """Reject vocabularies that would silently give wrong results.

    Raises ``ValueError`` naming the class and the fix for: a name that is not a string or is empty,
    fewer than two classes (a softmax over one class is always 1), and a name listed twice in the
    same group (two identical text rows: argmax ties between them). A name may appear once as a
    thing and once as stuff (the reference's 316 list has ``cupboard``, ``fruit``, ``cradle`` so).
    """
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f'{where}: class {i} has an empty name ({name!r}); every class needs '
                             'a name for its text prompts.')
    if len(names) < 2:
        raise ValueError(f'{where}: only {len(names)} class ({list(names)!r}); classification and '
                         'retrieval need at least two classes. Add the other classes of the data.')
    seen = {}
    for i, (name, thing) in enumerate(zip(names, is_thing)):
        key = (name.strip().lower(), bool(thing))
        if key in seen:
            group = 'thing' if thing else 'stuff'
            raise ValueError(f'{where}: {group} class {name!r} is listed twice (classes {seen[key]} '
                             f'and {i}); remove or rename one of them (identical names give '
                             'identical text embeddings).')
        seen[key] = i


def first_difference(names: Sequence[str], expected: Sequence[str]) -> Optional[int]:
    """Index of the first class where two lists differ (a missing entry counts); None if equal."""
    names, expected = list(names), list(expected)
    if names == expected:
        return None
    return next((i for i, (a, b) in enumerate(zip(names, expected)) if a != b),
                min(len(names), len(expected)))


def check_same_classes(names: Optional[Sequence[str]], expected: Optional[Sequence[str]],
                       names_in: str, expected_in: str, fix: str, where: str = '') -> None:
    """Raise ``ValueError`` when two class lists differ (names or order), naming the first
    difference; nothing to check when either list is ``None``.

    The message (one format for every class-list comparison of the package)::

        <where>: class 2 is 'dog' in <names_in> but 'bottle' in <expected_in> (4 classes in
        <names_in>, 4 in <expected_in>); <fix>

    A class beyond the end of a list is ``missing``.
    """
    if names is None or expected is None:
        return
    names, expected = list(names), list(expected)
    i = first_difference(names, expected)
    if i is None:
        return

    def at(lst: List[str]) -> str:
        return repr(lst[i]) if i < len(lst) else 'missing'

    raise ValueError(f'{where + ": " if where else ""}class {i} is {at(names)} in {names_in} but '
                     f'{at(expected)} in {expected_in} ({len(names)} classes in {names_in}, '
                     f'{len(expected)} in {expected_in}); {fix}')


#: extensions of vocabulary files (a value ending so is read as a path, never as a class name)
VOCABULARY_FILE_EXTENSIONS = ('.txt', '.json', '.csv', '.tsv', '.yaml', '.yml')


def looks_like_path(value: str) -> bool:
    """Whether ``value`` (a command-line vocabulary) is meant as a file rather than class names:
    no comma, and a path separator or a vocabulary file extension (``names.txt``, ``data/x``)."""
    value = value.strip()
    return ',' not in value and ('/' in value or os.sep in value
                                 or value.lower().endswith(VOCABULARY_FILE_EXTENSIONS))


def bundled_vocabularies() -> List[str]:
    """Names accepted by :func:`load_vocabulary` without a path."""
    return sorted(f[:-5] for f in os.listdir(BUNDLED_DIR) if f.endswith('.json'))


def _flag(value: Union[int, bool, str], where: str) -> bool:
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ('thing', '1', 'true'):
            return True
        if low in ('stuff', '0', 'false'):
            return False
        raise ValueError(f'{where}: thing/stuff flag {value!r} is not thing/stuff/0/1')
    return bool(value)


def load_vocabulary(source: Union[str, 'Vocabulary'], require_split: bool = True) -> Vocabulary:
    """Load a vocabulary from a bundled name, a JSON file or a text file (see module docstring).

    ``require_split=False`` is for users of the names only (open-vocabulary segmentation on
    ``ade20k_847``, which has no thing/stuff split): a JSON list without any ``isthing`` then loads
    with every class marked stuff.

    Raises:
        FileNotFoundError: no such file or bundled name.
        ValueError: the file lacks a thing/stuff flag for some class, or is malformed.
    """
    if isinstance(source, Vocabulary):
        return source
    path = source
    if not osp.exists(path):
        bundled = osp.join(BUNDLED_DIR, f'{source}.json')
        if osp.exists(bundled):
            path = bundled
        elif looks_like_path(source):
            raise FileNotFoundError(f'vocabulary file not found: {source!r} (the bundled '
                                    'vocabularies are named without a path or extension: '
                                    f'{", ".join(bundled_vocabularies())})')
        else:
            raise FileNotFoundError(
                f'vocabulary {source!r} is neither a file nor a bundled vocabulary '
                f'({", ".join(bundled_vocabularies())})')
    if path.endswith('.json'):
        data = load_json_file(path, 'vocabulary')
        if isinstance(data, dict) and 'names' in data:
            names = list(data['names'])
            if 'is_thing' not in data:
                raise ValueError(f'vocabulary {path!r} has no "is_thing" list: DenseVLM needs the '
                                 'thing/stuff split of every class.')
            return Vocabulary(names, [_flag(v, path) for v in data['is_thing']])
        if not isinstance(data, list):
            raise ValueError(f'vocabulary {path!r}: expected a JSON list or {{"names", "is_thing"}}')
        if not data:
            raise ValueError(f'vocabulary {path!r} is an empty list; list the classes.')
        if require_split and data and all(isinstance(e, dict) for e in data) and \
                not any('isthing' in e for e in data):
            raise ValueError(
                f'vocabulary {path!r} has no "isthing" key in any entry: DenseVLM needs the '
                'thing/stuff split of every class. Add "isthing": 1 (thing) or 0 (stuff) to each '
                'entry (COCO-Stuff style lists may omit it on stuff entries only); to read the '
                'names only, use load_vocabulary(..., require_split=False).')
        if data and all(isinstance(e, str) for e in data):
            # A plain list of names (the detection vocabularies ovcoco_* / ovlvis_*): object
            # classes, so every class is a thing.
            return Vocabulary(list(data), [True] * len(data))
        names, flags = [], []
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or 'name' not in entry:
                raise ValueError(
                    f'vocabulary {path!r} entry {i} ({entry!r}) has no thing/stuff split: give '
                    'objects {"name": ..., "isthing": 0|1} (or a txt file with "thing<TAB>name" / '
                    '"stuff<TAB>name" lines).')
            names.append(entry['name'])
            # COCO-Stuff-171 style lists omit ``isthing`` on stuff entries.
            flags.append(_flag(entry.get('isthing', 0), f'{path} entry {i}'))
        return Vocabulary(names, flags)
    names, flags = [], []
    for lineno, line in enumerate(read_text_file(path, 'vocabulary').splitlines(), 1):
        if not line.strip():
            continue
        if '\t' not in line:
            raise ValueError(f'{path}:{lineno}: {line!r} has no thing/stuff split; write '
                             '"thing<TAB>name" or "stuff<TAB>name".')
        kind, name = line.split('\t', 1)
        flags.append(_flag(kind, f'{path}:{lineno}'))
        names.append(name.strip())
    if not names:
        raise ValueError(f'vocabulary {path!r} has only blank lines; write one class per line, '
                         '"thing<TAB>name" or "stuff<TAB>name".')
    return Vocabulary(names, flags)


def vocabulary_from_lists(names: Sequence[str], is_thing: Sequence[bool]) -> Vocabulary:
    return Vocabulary(list(names), list(is_thing))
