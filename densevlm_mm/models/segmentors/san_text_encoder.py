"""SAN's CLIP text encoder with named vocabularies, embedding files and DenseVLM's prompt ensemble.

mmseg's ``CLIPTextEncoder`` takes the class names from ``dataset_name`` (mmseg's
``get_classes``) or a ``vocabulary`` list — never from the dataset's metainfo — and formats each
with one of mmseg's template lists (``'vild'``: 14 ``'a photo of a {}.'``-style prompts), averaging
the L2-normalised prompt embeddings. :class:`SANTextEncoder` keeps that module (same weights, same
keys, same ``forward`` contract) and changes only where the rows come from:

* ``templates='vild'`` (default, as mmseg's ``CLIPTextEncoder``): mmseg's prompts and tokenizer,
  the rows mmseg's SAN computes; any mmseg template name or a list of ``'{}'`` templates works as
  in mmseg; ``templates='densevlm'`` switches to the 63 templates and name cleaning used to train
  the backbone (:mod:`densevlm_mm.text_embeddings`, spec §7.1), tokenised by open_clip's
  tokenizer;
* ``vocabulary`` may also be a bundled vocabulary name (``'coco_stuff_171'``, ``'ade20k_847'``, …)
  or a ``.json`` / ``.txt`` file;
* ``embedding_file``: precomputed rows (``tools/text_embeddings.py``); checked against the
  vocabulary (names, order) and ``output_dims`` when the model is built, i.e. before training.
"""
import os.path as osp
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer
from mmseg.models.text_encoder import CLIPTextEncoder
from mmseg.utils import get_classes

from densevlm_mm.registry import MODELS
from densevlm_mm.text_embeddings import TEMPLATES, build_text_embeddings, load_text_embeddings
from densevlm_mm.utils.files import load_json_file

_VOCAB_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'vocab_data')


def vocabulary_names(vocabulary: Union[str, Sequence[str]]) -> List[str]:
    """Class names of a list, a bundled vocabulary name, or a ``.json`` / ``.txt`` file.

    JSON: a list of names or of objects with ``name``; text: one name a line, or ``<id>: <name>``
    lines with ids 1..N (PASCAL-Context's ``labels.txt``; read as the dataset reads it).
    """
    if not isinstance(vocabulary, str):
        return [str(v) for v in vocabulary]
    path = vocabulary
    if not osp.isfile(path):
        path = osp.join(_VOCAB_DIR, vocabulary + '.json')
    if not osp.isfile(path):
        raise FileNotFoundError(f'vocabulary {vocabulary!r} is neither a file nor a bundled '
                                f'vocabulary (densevlm_mm/vocab_data/*.json)')
    if path.endswith('.json'):
        entries = load_json_file(path, 'vocabulary')
        if isinstance(entries, dict) and 'names' in entries:
            entries = entries['names']
        return [e['name'] if isinstance(e, dict) else str(e) for e in entries]
    from densevlm_mm.datasets.seg_datasets import read_class_names
    return read_class_names(path)


@MODELS.register_module()
class SANTextEncoder(CLIPTextEncoder):
    """mmseg ``CLIPTextEncoder`` with named vocabularies, an optional checked embedding file and the
    option of DenseVLM's prompts.

    Args:
        vocabulary: names, a bundled vocabulary name or a file (see :func:`vocabulary_names`).
        dataset_name: mmseg dataset name instead of ``vocabulary`` (mmseg's ``get_classes``).
        templates: an mmseg template name (``'vild'``, mmseg's default: mmseg's SAN), a list of
            ``'{}'`` templates, or ``'densevlm'`` (the 63 templates of backbone training).
        embedding_file: optional ``.pt`` from ``tools/text_embeddings.py`` whose rows replace the
            encoded prompts; must list exactly the vocabulary's names and have ``output_dims``
            columns (else ``ValueError`` at construction).
        act_cfg: MLP activation; mmseg hard-codes ``QuickGELU`` (OpenAI CLIP), open_clip towers
            built without ``quick_gelu`` (e.g. the bundled tiny configs) need ``dict(type='GELU')``.
        **kwargs: the rest of ``CLIPTextEncoder`` (dims, ``cat_bg``, ``cache_feature``, ...).

    ``forward()`` returns ``[C (+1 background), output_dims]``, L2-normalised rows times
    ``logit_scale.exp()`` (as mmseg).
    """

    def __init__(self, vocabulary: Optional[Union[str, Sequence[str]]] = None,
                 dataset_name: Optional[str] = None,
                 templates: Union[str, Sequence[str]] = 'vild',
                 embedding_file: Optional[str] = None, act_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        names = vocabulary_names(vocabulary) if vocabulary is not None else None
        use_densevlm = isinstance(templates, str) and templates == 'densevlm'
        super().__init__(dataset_name=dataset_name, vocabulary=names,
                         templates=list(TEMPLATES) if use_densevlm else templates, **kwargs)
        if act_cfg is not None:
            for layer in self.transformer:
                for ffn in layer.ffns:  # mmcv FFN: layers[0] = Sequential(Linear, act, Dropout)
                    ffn.activate = build_activation_layer(act_cfg)
                    ffn.layers[0][1] = ffn.activate
        self.densevlm_prompts = use_densevlm
        self.embedding_file = embedding_file
        if embedding_file is not None:
            te = load_text_embeddings(embedding_file, class_names=self.class_names,
                                      embed_dim=self.text_projection.shape[1])
            self.register_buffer('file_embeds', F.normalize(te.embeddings.float(), dim=-1),
                                 persistent=False)
        self._tokenizer = None

    @property
    def class_names(self) -> List[str]:
        """Names of the rows of :meth:`forward` (background excluded)."""
        if self.vocabulary is not None:
            return list(self.vocabulary)
        names = list(get_classes(self.dataset_name))
        return names[1:] if names and names[0] == 'background' else names

    def tokenize(self, texts: List[str]) -> torch.Tensor:
        """open_clip's CLIP BPE tokenizer (context ``self.num_pos``, EOT kept on truncation)."""
        if self._tokenizer is None:
            import open_clip
            self._tokenizer = open_clip.SimpleTokenizer(context_length=self.num_pos)
        return self._tokenizer(texts)

    def template_encode(self, vocabulary: List[str]) -> torch.Tensor:
        """Prompt-ensembled unit rows ``[len(vocabulary), output_dims]``."""
        if not self.densevlm_prompts:  # mmseg's own templates and tokenizer
            return super().template_encode(vocabulary)
        device = self.token_embedding.weight.device
        return build_text_embeddings(self, self.tokenize, vocabulary, self.templates,
                                     normalize=True, device=device).to(device)

    def forward(self) -> torch.Tensor:
        if self.embedding_file is None:
            return super().forward()
        class_embeds = self.file_embeds
        if self.cat_bg:
            class_embeds = F.normalize(torch.cat([class_embeds, self.bg_embed]), p=2, dim=-1)
        return self.logit_scale.exp() * class_embeds
