"""Class names → text embeddings with the model's own text tower, cached on disk.

Presets are the bundled class lists (``densevlm_mm/vocab_data``); a custom vocabulary is a list of
names. Embeddings use the 63-template prompt ensemble of :mod:`densevlm_mm.text_embeddings`, each
row L2-normalised. The cache file name is a hash of the model name, the identity of the checkpoint
that holds the text tower (absolute path, size, modification time), the templates and the names;
the file itself is a regular text-embedding file (``tools/text_embeddings.py`` format).
"""
import hashlib
import json
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from densevlm_mm.text_embeddings import (TEMPLATES, TextEmbeddings, build_text_embeddings,
                                         clean_name, load_text_embeddings)
from densevlm_mm.vocabulary import BUNDLED_DIR

#: short preset names of the demo → bundled class lists
PRESETS = {
    'coco': 'coco_panoptic_133',
    'ade150': 'ade20k_panoptic_150',
    'ade847': 'ade20k_847',
    'lvis': 'ovlvis_1203_all',
    'densevlm316': 'densevlm_316',
}

DEFAULT_CACHE_DIR = osp.join(osp.expanduser('~'), '.cache', 'densevlm_mm', 'text_embeddings')


class VocabularyError(ValueError):
    """Class names that cannot make an open-vocabulary label map."""


@dataclass
class VocabularyEmbeddings:
    """Unit-norm class embeddings ``[C, D]`` in ``names`` order.

    ``display_names`` are short legend labels (first synonym of ADE-style ``"a, b, c"`` lists);
    ``is_thing`` is known for presets with a thing/stuff split, else all False.
    """
    names: List[str]
    embeddings: torch.Tensor
    display_names: List[str] = field(default_factory=list)
    is_thing: Optional[torch.Tensor] = None
    source: str = 'custom'
    cache_file: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.display_names:
            self.display_names = [display_name(n) for n in self.names]

    def __len__(self) -> int:
        return len(self.names)


def display_name(name: str) -> str:
    """Legend text of a class: the first synonym, underscores as spaces."""
    return name.split(',')[0].replace('_', ' ').strip() or name


def preset_names(preset: str) -> List[str]:
    """Class names of a preset (``coco``, ``ade150``, ``ade847``, ``lvis``, ``densevlm316``) or of
    any bundled list (``coco_stuff_171`` ...), in row order.

    Raises:
        VocabularyError: unknown preset.
    """
    bundled = PRESETS.get(preset, preset)
    path = osp.join(BUNDLED_DIR, f'{bundled}.json')
    if not osp.isfile(path):
        known = sorted(PRESETS) + sorted(f[:-5] for f in os.listdir(BUNDLED_DIR)
                                         if f.endswith('.json'))
        raise VocabularyError(f'unknown vocabulary preset {preset!r}; use one of {known}, or '
                              'give your own class names')
    with open(path) as f:
        data = json.load(f)
    # the lists are stored in three shapes: [{name, ...}], ["name"], {"names": [...]}
    if isinstance(data, dict):
        data = data.get('names', [])
    return [e['name'] if isinstance(e, dict) else str(e) for e in data]


def _preset_is_thing(preset: str, names: List[str]) -> Optional[torch.Tensor]:
    path = osp.join(BUNDLED_DIR, f'{PRESETS.get(preset, preset)}.json')
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, list) and data and all(isinstance(e, dict) and 'isthing' in e
                                               for e in data):
        flags = {e['name']: bool(e['isthing']) for e in reversed(data)}  # first occurrence wins
        return torch.tensor([flags[n] for n in names], dtype=torch.bool)
    return None


def parse_class_names(text: str) -> List[str]:
    """``"snow, skis,sky"`` → ``['snow', 'skis', 'sky']`` (whitespace around names stripped;
    empty entries are kept so that :func:`check_class_names` can name them)."""
    return [part.strip() for part in text.split(',')]


def check_class_names(names: Sequence[str], source: str = 'the vocabulary') -> List[str]:
    """Validate a custom vocabulary for a label map (names stripped of surrounding spaces).

    The checks of :func:`densevlm_mm.vocabulary.check_class_names` (an empty name, fewer than two
    classes, a name listed twice), plus names that differ only in what the prompts normalise away
    (case, ``_`` vs space, ``/`` vs ``or``): they would get identical text embeddings.

    Raises:
        VocabularyError: naming the class and the fix.
    """
    from densevlm_mm.vocabulary import check_class_names as check_vocabulary
    names = [n.strip() if isinstance(n, str) else n for n in names]
    try:
        check_vocabulary(names, [False] * len(names), where=source)
    except ValueError as exc:
        hint = (' For a label map, add a class for everything else, e.g. "background" or '
                '"other".' if len(names) < 2 else '')
        raise VocabularyError(f'{exc}{hint}') from None
    seen = {}
    for i, name in enumerate(names):
        key = clean_name(name)
        if key in seen:
            raise VocabularyError(
                f'{source}: {name!r} (class {i}) duplicates {names[seen[key]]!r} (class '
                f'{seen[key]}): both give the same prompts, hence the same text embedding. '
                'Remove one.')
        seen[key] = i
    return names


def _dedupe_preset(names: List[str]) -> List[str]:
    """Bundled lists may repeat a name across the thing/stuff split (densevlm_316: cupboard,
    fruit, cradle); identical names give identical rows, so only the first is kept."""
    out, seen = [], set()
    for name in names:
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def resolve_vocabulary(vocabulary: Union[str, Sequence[str]]):
    """``(names, is_thing or None, source)`` of a preset name or a list of names."""
    if isinstance(vocabulary, str):
        names = _dedupe_preset(preset_names(vocabulary))
        return names, _preset_is_thing(vocabulary, names), vocabulary
    return check_class_names(vocabulary), None, 'custom'


def file_identity(path: Optional[str]) -> Optional[str]:
    """``abs path|size|mtime`` of a checkpoint (None for random initialisation)."""
    if not path:
        return None
    st = os.stat(path)
    return f'{osp.abspath(path)}|{st.st_size}|{st.st_mtime_ns}'


def cache_key(model_name: str, text_source: str, names: Sequence[str],
              templates: Sequence[str]) -> str:
    blob = json.dumps(dict(model=model_name, text=text_source, names=list(names),
                           templates=list(templates)), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


@torch.no_grad()
def build_vocabulary_embeddings(model, vocabulary: Union[str, Sequence[str]],
                                cache_dir: Optional[str] = None,
                                templates: Sequence[str] = TEMPLATES,
                                use_cache: bool = True,
                                progress: bool = False) -> VocabularyEmbeddings:
    """Encode a vocabulary with the model's own text tower.

    Args:
        model: an :class:`~densevlm_mm.apis.OpenVocabModel` from :func:`init_model`.
        vocabulary: a preset (see :data:`PRESETS`; any bundled list name works too) or a list of
            class names.
        cache_dir: where embeddings are cached (default ``~/.cache/densevlm_mm/text_embeddings``,
            or ``$DENSEVLM_CACHE_DIR``). Models without a checkpoint (random initialisation) are
            never cached.
        templates: prompt templates (``{}`` = name, ``{article}`` = a/an).
        use_cache: read and write the cache.
        progress: progress bar while encoding.

    Returns:
        :class:`VocabularyEmbeddings` with unit-norm rows ``[C, D]`` on the CPU.

    Raises:
        VocabularyError: unknown preset, single class, empty or duplicated names.
    """
    names, is_thing, source = resolve_vocabulary(vocabulary)
    text_source = file_identity(model.text_checkpoint)
    cache_file = None
    if use_cache and text_source is not None:
        cache_dir = cache_dir or os.environ.get('DENSEVLM_CACHE_DIR') or DEFAULT_CACHE_DIR
        key = cache_key(model.model_name, text_source, names, templates)
        cache_file = osp.join(cache_dir, f'{model.model_name.replace("/", "_")}_{key}.pt')
        if osp.isfile(cache_file):
            try:
                te = load_text_embeddings(cache_file, class_names=names,
                                          embed_dim=model.embed_dim)
                return VocabularyEmbeddings(names, F.normalize(te.embeddings.float(), dim=-1),
                                            is_thing=is_thing, source=source,
                                            cache_file=cache_file)
            except (ValueError, RuntimeError, OSError):
                pass  # a stale or damaged cache entry is rebuilt below
    emb = build_text_embeddings(model.clip, model.tokenizer, names, templates, normalize=True,
                                device=model.device, progress=progress)
    emb = F.normalize(emb.float(), dim=-1)
    if cache_file is not None:
        os.makedirs(osp.dirname(cache_file), exist_ok=True)
        flags = is_thing if is_thing is not None else torch.zeros(len(names), dtype=torch.bool)
        tmp = f'{cache_file}.{os.getpid()}.tmp'
        TextEmbeddings(emb, list(names), flags, model_name=model.model_name, normalized=True,
                       templates=list(templates)).save(tmp)
        os.replace(tmp, cache_file)  # atomic: concurrent demos never read half a file
    return VocabularyEmbeddings(names, emb, is_thing=is_thing, source=source,
                                cache_file=cache_file)
