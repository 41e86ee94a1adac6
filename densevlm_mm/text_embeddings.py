"""Class text embeddings: prompt ensembling, the embedding file format, and its checks.

File format (``.pt``, read with ``torch.load(weights_only=True)``) — a dict:

=================  =====================================================================
``embeddings``     float32 ``[C, D]``, one row per class in vocabulary order
``class_names``    list of C names
``is_thing``       bool ``[C]``
``model_name``     open_clip model name whose text tower produced the rows
``embed_dim``      D
``normalized``     whether rows are unit norm (the reference's 316-class files are not)
``templates``      the prompt templates used
``background``     float32 ``[D]``: the word ``background`` through the same templates and
                   normalisation (the fixed background column of CLIPSelf's F-ViT); absent
                   from files written before it was added
=================  =====================================================================

Reference ``.npy`` files (``[C, D]`` only) load too when a vocabulary is given for the names and
the thing/stuff split.
"""
import logging
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .vocabulary import Vocabulary, check_same_classes, load_vocabulary
from .utils.files import read_text_file

# The 63 prompt templates of the reference (spec §7.1), ``{article}`` = a/an, ``{}`` = class name.
TEMPLATES: List[str] = [
    'There is {article} {} in the scene.', 'There is the {} in the scene.',
    'a photo of {article} {} in the scene.', 'a photo of the {} in the scene.',
    'a photo of one {} in the scene.', 'itap of {article} {}.', 'itap of my {}.', 'itap of the {}.',
    'a photo of {article} {}.', 'a photo of my {}.', 'a photo of the {}.', 'a photo of one {}.',
    'a photo of many {}.', 'a good photo of {article} {}.', 'a good photo of the {}.',
    'a bad photo of {article} {}.', 'a bad photo of the {}.', 'a photo of a nice {}.',
    'a photo of the nice {}.', 'a photo of a cool {}.', 'a photo of the cool {}.',
    'a photo of a weird {}.', 'a photo of the weird {}.', 'a photo of a small {}.',
    'a photo of the small {}.', 'a photo of a large {}.', 'a photo of the large {}.',
    'a photo of a clean {}.', 'a photo of the clean {}.', 'a photo of a dirty {}.',
    'a photo of the dirty {}.', 'a bright photo of {article} {}.', 'a bright photo of the {}.',
    'a dark photo of {article} {}.', 'a dark photo of the {}.', 'a photo of a hard to see {}.',
    'a photo of the hard to see {}.', 'a low resolution photo of {article} {}.',
    'a low resolution photo of the {}.', 'a cropped photo of {article} {}.',
    'a cropped photo of the {}.', 'a close-up photo of {article} {}.',
    'a close-up photo of the {}.', 'a jpeg corrupted photo of {article} {}.',
    'a jpeg corrupted photo of the {}.', 'a blurry photo of {article} {}.',
    'a blurry photo of the {}.', 'a pixelated photo of {article} {}.',
    'a pixelated photo of the {}.', 'a black and white photo of the {}.',
    'a black and white photo of {article} {}.', 'a plastic {}.', 'the plastic {}.', 'a toy {}.',
    'the toy {}.', 'a plushie {}.', 'the plushie {}.', 'a cartoon {}.', 'the cartoon {}.',
    'an embroidered {}.', 'the embroidered {}.', 'a painting of the {}.', 'a painting of a {}.'
]


def clean_name(name: str) -> str:
    """``_`` → space, ``/`` → `` or ``, lower case, no trailing full stop (spec §7.1)."""
    return name.replace('_', ' ').replace('/', ' or ').lower().rstrip('.')


def make_prompts(name: str, templates: Sequence[str] = TEMPLATES) -> List[str]:
    """All prompts of one class; prompts starting with ``a``/``the`` get the prefix ``This is ``."""
    article = 'an' if name[:1].lower() in 'aeiou' else 'a'
    cleaned = clean_name(name)
    prompts = []
    for template in templates:
        prompt = template.replace('{article}', article).replace('{}', cleaned)
        if prompt.startswith('a ') or prompt.startswith('an ') or prompt.startswith('the '):
            prompt = 'This is ' + prompt
        prompts.append(prompt)
    return prompts


def build_text_embeddings(clip_model: torch.nn.Module,
                          tokenizer: Callable,
                          names: Sequence[str],
                          templates: Sequence[str] = TEMPLATES,
                          normalize: bool = True,
                          batch_size: int = 256,
                          device: Union[str, torch.device] = 'cpu',
                          progress: bool = False) -> torch.Tensor:
    """Prompt-ensembled class embeddings ``[C, D]``.

    Each prompt is encoded and L2-normalised, prompts of a class are averaged, and the mean is
    L2-normalised when ``normalize`` (the reference's 316-class files skip this last step).

    A twin of ``open_clip.build_zero_shot_classifier``, kept for ``normalize=False`` (the
    reference's files) and the per-name "This is" rule of :func:`make_prompts`; with
    ``normalize=True`` the two agree (``tests/test_vocabulary_and_text_embeddings.py``).
    """
    rows = []
    check = PromptLengthCheck(tokenizer)
    iterator = enumerate(names)
    if progress:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(names))
    for _, name in iterator:
        prompts = make_prompts(name, templates)
        feats, all_tokens = [], []
        for start in range(0, len(prompts), batch_size):
            cpu_tokens = tokenizer(prompts[start:start + batch_size])
            all_tokens.append(cpu_tokens)
            tokens = cpu_tokens.to(device)
            with torch.no_grad():  # a block, not a decorator: mutmut mutates the function
                feats.append(F.normalize(clip_model.encode_text(tokens).float(), dim=-1))
        check.add(name, prompts, torch.cat(all_tokens))
        mean = torch.cat(feats).mean(0)
        rows.append(F.normalize(mean, dim=0) if normalize else mean)
        if progress:
            bar.update()
    check.report()
    return torch.stack(rows).cpu()


def _short(name: str, head: int = 40, tail: int = 20) -> str:
    """``repr`` of a name, its middle elided when long."""
    return repr(name if len(name) <= head + tail + 3 else f'{name[:head]}...{name[-tail:]}')


class PromptLengthCheck:
    """Class names whose prompts the tokenizer cuts at the text tower's context length (77
    tokens for CLIP).

    A cut prompt loses the end of the name: two long names that differ only there get identical
    tokens, hence identical embeddings, and the classifier cannot tell them apart. :meth:`add`
    raises ``ValueError`` naming both classes in that case (names equal up to
    :func:`clean_name`, e.g. a class listed once as thing and once as stuff, are meant to share a
    row); :meth:`report` logs a warning listing the cut names otherwise.
    """

    def __init__(self, tokenizer: Callable) -> None:
        self.tokenizer = tokenizer
        self.context = getattr(tokenizer, 'context_length', None)
        self.seen: dict = {}
        self.cut: List[str] = []

    def _cut(self, prompts: Sequence[str], tokens: torch.Tensor) -> bool:
        encode = getattr(self.tokenizer, 'encode', None)
        if encode is None or not self.context:  # not open_clip's BPE tokenizer: no length check
            return False
        full = (tokens[:, -1] != 0).tolist()  # the context is filled: cut, or exactly full
        return any(len(encode(p)) + 2 > self.context  # + the start and end tokens
                   for p, f in zip(prompts, full) if f)

    def add(self, name: str, prompts: Sequence[str], tokens: torch.Tensor) -> None:
        if self._cut(prompts, tokens):
            self.cut.append(name)
        other = self.seen.setdefault(tokens.cpu().numpy().tobytes(), name)
        if clean_name(other).strip() != clean_name(name).strip():
            raise ValueError(
                f'class names {_short(other)} and {_short(name)} give identical prompts after the '
                f'tokenizer cut them at the text tower\'s context length ({self.context} tokens): '
                'they would get identical text embeddings. Shorten the names so that they differ '
                'within their first words.')

    def report(self) -> None:
        if not self.cut:
            return
        from mmengine.logging import print_log
        shown = ', '.join(_short(n) for n in self.cut[:5])
        print_log(f'{len(self.cut)} class name(s) too long for the text tower\'s context '
                  f'({self.context} tokens): their prompts are cut, and the end of the name is '
                  f'not encoded: {shown}{" ..." if len(self.cut) > 5 else ""}. Shorten them.',
                  logger='current', level=logging.WARNING)


#: the name whose prompt-ensembled row is stored as ``background`` (CLIPSelf's F-ViT files)
BACKGROUND_NAME = 'background'


@dataclass
class TextEmbeddings:
    """Class embeddings ``[C, D]`` with the names, thing/stuff flags and producing model;
    ``background`` ``[D]`` (or ``None``) is the row of the word "background" made the same way."""
    embeddings: torch.Tensor
    class_names: List[str]
    is_thing: torch.Tensor
    model_name: str = 'unknown'
    normalized: bool = True
    templates: List[str] = field(default_factory=lambda: list(TEMPLATES))
    background: Optional[torch.Tensor] = None

    @property
    def embed_dim(self) -> int:
        return self.embeddings.shape[1]

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def save(self, path: str) -> None:
        obj = dict(embeddings=self.embeddings.float().contiguous(),
                   class_names=list(self.class_names), is_thing=self.is_thing.bool(),
                   model_name=self.model_name, embed_dim=self.embed_dim,
                   normalized=bool(self.normalized), templates=list(self.templates))
        if self.background is not None:
            obj['background'] = self.background.float().reshape(-1).contiguous()
        torch.save(obj, path)


def load_text_embeddings(path: str,
                         vocabulary: Optional[Union[str, Vocabulary]] = None,
                         embed_dim: Optional[int] = None,
                         num_classes: Optional[int] = None,
                         class_names: Optional[Sequence[str]] = None,
                         expected_model: Optional[str] = None,
                         model_name: Optional[str] = None) -> TextEmbeddings:
    """Load an embedding file and check it against what it will be used with.

    Args:
        path: ``.pt`` file written by ``tools/text_embeddings.py``, or a reference ``.npy``.
        vocabulary: required for ``.npy`` files; for ``.pt`` files, its names and split must match.
        embed_dim: the model's joint embedding dimension.
        num_classes / class_names: what the dataset or loss expects (count, and names in order).
        expected_model: the open_clip model name (``DenseVLMBackbone.model_name``) whose text tower
            must have produced the rows. A file recording another model is rejected even when the
            dimension matches (rows of another text tower live in another space: the
            classification would be silently wrong). Files without a recorded model (reference
            ``.npy``) are accepted. ``model_name`` is the same check under its former name.

    Raises:
        FileNotFoundError, ValueError: with a message naming the file and the mismatch.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'text embedding file not found: {path!r}. Create it with '
                                '`python tools/text_embeddings.py MODEL CKPT VOCAB OUT.pt`.')
    vocab = load_vocabulary(vocabulary) if vocabulary is not None else None
    if path.endswith('.npy'):
        if vocab is None:
            raise ValueError(f'{path!r} is a bare .npy array; pass the vocabulary it was made from '
                             '(names and thing/stuff split), e.g. vocabulary="densevlm_316".')
        array = torch.from_numpy(np.load(path)).float()
        norms = array.norm(dim=-1)
        te = TextEmbeddings(array, list(vocab.names), vocab.is_thing.clone(),
                            model_name='unknown (.npy)',
                            normalized=bool(torch.allclose(norms, torch.ones_like(norms), atol=1e-3)))
    else:
        try:
            obj = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as exc:
            raise ValueError(f'{path!r} is not a text embedding file readable with '
                             f'weights_only=True: {exc}') from exc
        missing = {'embeddings', 'class_names', 'is_thing'} - set(obj if isinstance(obj, dict) else {})
        if missing:
            raise ValueError(f'{path!r} is not a text embedding file (missing {sorted(missing)}); '
                             'create one with tools/text_embeddings.py.')
        te = TextEmbeddings(obj['embeddings'].float(), list(obj['class_names']),
                            torch.as_tensor(obj['is_thing']).bool(),
                            model_name=obj.get('model_name', 'unknown'),
                            normalized=bool(obj.get('normalized', True)),
                            templates=list(obj.get('templates', TEMPLATES)),
                            background=obj.get('background'))
    if te.embeddings.ndim != 2 or te.embeddings.shape[0] != len(te.class_names):
        raise ValueError(f'{path!r}: embeddings of shape {tuple(te.embeddings.shape)} do not have '
                         f'one row per class ({len(te.class_names)} names)')
    if te.background is not None:
        te.background = torch.as_tensor(te.background).float().reshape(-1)
        if te.background.numel() != te.embed_dim:
            raise ValueError(f'{path!r}: the background row has {te.background.numel()} values '
                             f'but the class rows {te.embed_dim}; regenerate the file with '
                             'tools/text_embeddings.py.')
    if vocab is not None:
        if len(vocab) != len(te):
            raise ValueError(f'{path!r} has {len(te)} classes but the vocabulary has {len(vocab)}; '
                             'regenerate the embeddings for this vocabulary.')
        if not path.endswith('.npy'):
            check_same_classes(te.class_names, vocab.names, 'the file', 'the vocabulary',
                               'the order matters: regenerate the embeddings for this '
                               'vocabulary.', where=repr(path))
            if not torch.equal(vocab.is_thing, te.is_thing):
                raise ValueError(f'{path!r}: thing/stuff flags differ from the vocabulary')
    if embed_dim is not None and te.embed_dim != embed_dim:
        raise ValueError(f'{path!r} holds {te.embed_dim}-d embeddings but the model embeds into '
                         f'{embed_dim} dimensions; generate the file with the same CLIP model '
                         f'(file: {te.model_name}).')
    if num_classes is not None and len(te) != num_classes:
        raise ValueError(f'{path!r} has {len(te)} classes but {num_classes} are expected; generate '
                         'it for the dataset\'s category list.')
    if class_names is not None:
        class_names = list(class_names)
        if len(class_names) != len(te):
            raise ValueError(f'{path!r} has {len(te)} classes but the dataset has '
                             f'{len(class_names)}')
        check_same_classes(te.class_names, class_names, 'the file', 'the dataset',
                           "the rows must follow the dataset's category order.",
                           where=repr(path))
    if expected_model is not None and model_name is not None and expected_model != model_name:
        raise ValueError(f'expected_model={expected_model!r} and model_name={model_name!r} differ')
    expected = expected_model if expected_model is not None else model_name
    if expected is not None and te.model_name not in ('unknown', 'unknown (.npy)') \
            and te.model_name != expected:
        raise ValueError(
            f'{path!r} was made with the text tower of {te.model_name!r}, but it is used with '
            f'{expected!r}: embeddings of another text tower are not comparable even with the same '
            f'dimension. Generate the file with `python tools/text_embeddings.py {expected} '
            'CHECKPOINT VOCABULARY OUT.pt`.')
    return te


def generate_text_embedding_file(model_name: str, checkpoint: Optional[str],
                                 vocabulary: Union[str, Vocabulary], out: str,
                                 templates: Optional[Union[str, Sequence[str]]] = None,
                                 normalize: bool = True, device: str = 'cpu',
                                 batch_size: int = 256, progress: bool = True) -> TextEmbeddings:
    """Encode a vocabulary with an open_clip text tower and write the embedding file.

    Besides the class rows, the file holds ``background``: the word "background" through the
    same templates and normalisation (as CLIPSelf's F-ViT class-embedding files, spec §8.3).

    Args:
        model_name: open_clip model name (or a bundled tiny config).
        checkpoint: local weights, or ``None``/``'none'`` for random init (tiny demo models).
        vocabulary: name or file (see :func:`load_vocabulary`).
        out: output ``.pt`` path.
        templates: a txt file (one template per line, ``{}`` = name) or a list; default the 63.
    """
    from densevlm_mm.models.clip_factory import create_clip

    vocab = load_vocabulary(vocabulary)
    if templates is None:
        templates = TEMPLATES
    elif isinstance(templates, str):
        if not osp.isfile(templates):
            raise FileNotFoundError(f'templates file not found: {templates!r}')
        templates = [ln for ln in read_text_file(templates, 'templates file').splitlines()
                     if '{}' in ln]
        if not templates:
            raise ValueError('the templates file has no line containing "{}"')
    ckpt = None if checkpoint in (None, 'none', 'None', '') else checkpoint
    model, tokenizer = create_clip(model_name, pretrained=ckpt, device=device)
    model.eval()
    emb = build_text_embeddings(model, tokenizer, list(vocab.names) + [BACKGROUND_NAME],
                                templates, normalize=normalize, batch_size=batch_size,
                                device=device, progress=progress)
    te = TextEmbeddings(emb[:-1], list(vocab.names), vocab.is_thing.clone(),
                        model_name=model_name, normalized=normalize, templates=list(templates),
                        background=emb[-1])
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    te.save(out)
    return te
