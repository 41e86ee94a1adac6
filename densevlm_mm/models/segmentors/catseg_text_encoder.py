"""CAT-Seg's text side: per-template class embeddings from an open_clip text tower (spec §7.1, §11.2).

CAT-Seg's cost volume keeps one channel per prompt template, so the text tower returns
``[C, P, D]`` (class, template, joint dim), each prompt L2-normalised — no template averaging. During
training the tower runs every step (its attention q/v weights are fine-tuned); in eval mode the
embeddings of a class list are cached until the next switch to train mode.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from densevlm_mm.registry import MODELS
from densevlm_mm.text_embeddings import TEMPLATES, make_prompts

#: template sets by name: CAT-Seg's published single prompt, DenseVLM's 63 (spec §7.1)
TEMPLATE_SETS: Dict[str, List[str]] = {
    'catseg-single': ['A photo of a {} in the scene'],
    'densevlm-63': list(TEMPLATES),
}


def resolve_templates(templates: Union[str, Sequence[str]]) -> List[str]:
    """A template-set name of :data:`TEMPLATE_SETS` or an explicit list (``{}`` = class name)."""
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            raise ValueError(f'unknown template set {templates!r}; use one of '
                             f'{sorted(TEMPLATE_SETS)} or a list of strings containing "{{}}"')
        return list(TEMPLATE_SETS[templates])
    templates = list(templates)
    if not templates or not all(isinstance(t, str) and '{}' in t for t in templates):
        raise ValueError('templates must be a non-empty list of strings each containing "{}"')
    return templates


def _text_out_dim(clip: torch.nn.Module) -> int:
    """Joint dimension of an open_clip text tower (``CLIP`` or ``CustomTextCLIP``)."""
    proj = getattr(clip, 'text_projection', None)
    if proj is None and getattr(clip, 'text', None) is not None:
        proj = getattr(clip.text, 'text_projection', None)
    if isinstance(proj, torch.nn.Linear):
        return proj.out_features
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[1])
    raise NotImplementedError(f'cannot find the text projection of {type(clip).__name__}')


@MODELS.register_module()
class CATSegTextEncoder(BaseModule):
    """Text tower of a stock open_clip model giving per-template class embeddings.

    Args:
        model_name: open_clip config name (bundled tiny names included).
        pretrained: local open_clip / EVA-CLIP checkpoint; ``None``: random init.
        model_cfg: open_clip config dict used instead of the name's.
        templates: template-set name (``'catseg-single'``: CAT-Seg's published
            ``'A photo of a {} in the scene'``; ``'densevlm-63'``: the backbone-training prompts)
            or a list.
        first_synonym: use only the first of comma-separated synonyms (CAT-Seg); ``False`` keeps
            the name verbatim (DenseVLM's embedding files).
        chunk_size: prompts per text-tower call.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 model_name: str,
                 pretrained: Optional[str] = None,
                 model_cfg: Optional[dict] = None,
                 templates: Union[str, Sequence[str]] = 'catseg-single',
                 first_synonym: bool = True,
                 chunk_size: int = 1024,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        from ..clip_factory import create_clip
        clip, tokenizer = create_clip(model_name, pretrained=pretrained, model_cfg=model_cfg)
        clip.visual = None  # the image tower comes from the backbone
        self.clip = clip
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.templates = resolve_templates(templates)
        self.first_synonym = first_synonym
        self.chunk_size = chunk_size
        self.embed_dim: int = _text_out_dim(clip)
        self._tokens: Dict[Tuple[str, ...], Tensor] = {}
        self._cache: Dict[Tuple[str, ...], Tensor] = {}
        self._register_load_state_dict_pre_hook(lambda *args, **kwargs: self._cache.clear())

    @property
    def num_prompts(self) -> int:
        """``P``: templates per class (cost-volume channels)."""
        return len(self.templates)

    @property
    def tower(self) -> torch.nn.Module:
        """The module holding the text transformer (for q/v fine-tuning)."""
        return self.clip

    def prompts(self, class_names: Sequence[str]) -> List[str]:
        """``C*P`` prompts, class-major (class ``c``, template ``p`` at ``c*P + p``)."""
        out = []
        for name in class_names:
            if self.first_synonym:
                name = name.split(',')[0].strip()
            out.extend(make_prompts(name, self.templates))
        return out

    def train(self, mode: bool = True) -> 'CATSegTextEncoder':
        self._cache.clear()  # weights may change while training
        return super().train(mode)

    def forward(self, class_names: Sequence[str]) -> Tensor:
        """Per-template embeddings ``[C, P, D]``, each row L2-normalised."""
        key = tuple(class_names)
        if not self.training and key in self._cache:
            return self._cache[key]
        if key not in self._tokens:
            self._tokens[key] = self.tokenizer(self.prompts(class_names))
        tokens = self._tokens[key].to(next(self.clip.parameters()).device)
        feats = [self.clip.encode_text(tokens[i:i + self.chunk_size])
                 for i in range(0, tokens.shape[0], self.chunk_size)]
        emb = F.normalize(torch.cat(feats).float(), dim=-1)
        emb = emb.reshape(len(class_names), self.num_prompts, -1)
        if not self.training:
            emb = self._cache[key] = emb.detach()
        return emb
