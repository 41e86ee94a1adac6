"""The P-VLM's retrieval read from the region cache instead of computed (issue 20).

:class:`CachedRegionRetriever` takes the arguments of :class:`RegionRetriever` plus ``cache``, so a
config switches by changing the type: ``target_generator=dict(type='CachedRegionRetriever',
cache=...)``. The P-VLM backbone is *not* built; its config identifies the weights the cache must
have been made with (the checkpoint file's SHA-256), as the text embedding file identifies the
classes. The teacher logits of the drawn cells arrive with the batch (``teacher_logits``, read by
the :class:`LoadRegionTargets` transform in the dataloader workers); the retrieval built from them
is the online one's (confidence, label, thing/stuff group), so the losses are unchanged.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from densevlm_mm.region_cache import array_sha256, check_meta, file_sha256, make_meta
from densevlm_mm.registry import MODELS
from densevlm_mm.text_embeddings import load_text_embeddings
from densevlm_mm.utils.checks import check_bool, check_number
from densevlm_mm.vocabulary import Vocabulary

from .retrieval import retrieval_from_logits, thing_split

_SHA_MEMO: Dict[Tuple[str, int, int], str] = {}


def _weights_sha256(backbone: Union[dict, nn.Module]) -> Optional[str]:
    """SHA-256 of the P-VLM's weights: its checkpoint file (config), or its state dict (a built
    module given directly); ``None`` for a config without checkpoint (random initialisation)."""
    if isinstance(backbone, nn.Module):
        state = backbone.state_dict()
        return array_sha256(*(state[k].detach().float().cpu().numpy() for k in sorted(state)))
    path = backbone.get('pretrained')
    if path is None and isinstance(backbone.get('init_cfg'), dict):
        path = backbone['init_cfg'].get('checkpoint')
    if path is None:
        return None
    if not osp.isfile(path):
        raise FileNotFoundError(f'P-VLM checkpoint not found: {path!r} (needed to check that the '
                                'region cache was made with these weights)')
    st = os.stat(path)
    memo = (osp.abspath(path), st.st_size, st.st_mtime_ns)
    if memo not in _SHA_MEMO:
        _SHA_MEMO[memo] = file_sha256(path)
    return _SHA_MEMO[memo]


def teacher_cache_key(retriever_cfg: dict, owner: str = 'region cache') -> Tuple[dict, dict]:
    """The ``teacher`` and ``text`` entries of a cache's key, from a retriever config.

    Args:
        retriever_cfg: ``RegionRetriever`` (or ``CachedRegionRetriever``) arguments.

    Returns:
        ``(teacher, text)``: the P-VLM (model name, backbone settings, weights hash, precision)
        with the retrieval settings (τ, text normalisation, thing split rule), and the class
        embeddings (hash, names, per-class thing flags).
    """
    cfg = dict(retriever_cfg)
    backbone = cfg['backbone']
    if isinstance(backbone, nn.Module):
        model_name = getattr(backbone, 'model_name', type(backbone).__name__)
        settings = dict(model_name=model_name)
    else:
        settings = {k: v for k, v in dict(backbone).items()
                    if k not in ('pretrained', 'init_cfg', 'type')}
        model_name = settings.get('model_name')
    teacher = dict(model_name=model_name, backbone=settings,
                   weights_sha256=_weights_sha256(backbone),
                   precision=str(cfg.get('precision', 'fp32')),
                   tau=float(cfg.get('tau', 0.01)),
                   normalize_text=bool(cfg.get('normalize_text', True)),
                   reference_thing_count=cfg.get('reference_thing_count'))
    te = load_text_embeddings(cfg['text_embeddings'], vocabulary=cfg.get('vocabulary'),
                              expected_model=model_name)
    is_thing = thing_split(te.is_thing, cfg.get('reference_thing_count'), owner)
    names = list(te.class_names)
    text = dict(sha256=array_sha256(te.embeddings.float().numpy(),
                                    np.frombuffer('\n'.join(names).encode(), dtype=np.uint8)),
                class_names=names,
                is_thing=[bool(v) for v in is_thing.tolist()])
    return teacher, text


@MODELS.register_module()
class CachedRegionRetriever(BaseModule):
    """:class:`RegionRetriever`'s targets from the region cache: the P-VLM is not built.

    Args:
        cache: the cache folder made by ``tools/build_region_cache.py`` with this retriever's
            settings.
        backbone, text_embeddings, vocabulary, tau, precision, normalize_text,
        reference_thing_count, inference_mode: as :class:`RegionRetriever`'s; they identify the
            P-VLM and the classes the cache must have been made with (``inference_mode`` changes
            no value and is ignored).

    Raises:
        FileNotFoundError: no cache at ``cache``.
        RegionCacheMismatch: the cache was made with another P-VLM (weights, model, precision),
            other text embeddings or retrieval settings, or another project version.
    """

    reads_cache = True

    def __init__(self, cache: str, backbone: Union[dict, nn.Module], text_embeddings: str,
                 vocabulary: Optional[Union[str, Vocabulary]] = None, tau: float = 0.01,
                 precision: str = 'fp32', normalize_text: bool = True,
                 reference_thing_count: Optional[int] = None, inference_mode: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        owner = type(self).__name__
        check_bool(inference_mode, 'inference_mode', owner)
        check_bool(normalize_text, 'normalize_text', owner)
        tau = check_number(tau, 'tau', owner, low=0, low_open=True, example=0.01)
        teacher, text = teacher_cache_key(
            dict(backbone=backbone, text_embeddings=text_embeddings, vocabulary=vocabulary,
                 tau=tau, precision=precision, normalize_text=normalize_text,
                 reference_thing_count=reference_thing_count), owner)
        expected = make_meta(teacher, text, image={}, pairs=[])
        self.meta = check_meta(cache, expected,
                               ('format_version', 'project_version', 'teacher', 'text'),
                               what=f'the P-VLM config (text embeddings {text_embeddings!r})')
        self.cache = cache
        self.class_names: List[str] = list(text['class_names'])
        self.register_buffer('class_is_thing', torch.tensor(text['is_thing']), persistent=False)
        self.tau, self.precision, self.normalize_text = tau, precision, normalize_text

    def train(self, mode: bool = True) -> 'CachedRegionRetriever':
        """Nothing trains."""
        return super().train(False)

    def init_weights(self) -> None:
        """No weights."""

    def forward(self, data_samples: Sequence) -> Dict:
        """The retrieval of the batch's regions from their ``teacher_logits``.

        Args:
            data_samples: the batch's samples, each with ``teacher_logits`` ``[K_i, C]`` for its
                ``grid_boxes`` ``[K_i, 4]``.

        Returns:
            ``logits`` ``[K, C]``, ``probs``, ``conf``, ``labels``, ``region_is_thing``,
            ``class_is_thing``, ``tau``, ``normalize_text`` (as :class:`RegionRetriever`, without
            ``feats`` and ``text``).
        """
        logits = []
        for i, sample in enumerate(data_samples):
            if 'teacher_logits' not in sample:
                raise KeyError(f'sample {i} has no teacher_logits: a CachedRegionRetriever needs '
                               'LoadRegionTargets(cache=...) after SampleGridRegions in the '
                               'training pipeline')
            t = sample.teacher_logits
            if 'grid_boxes' in sample and t.shape[0] != len(sample.grid_boxes):
                raise ValueError(f'sample {i}: {t.shape[0]} cached targets for '
                                 f'{len(sample.grid_boxes)} grid boxes')
            logits.append(t)
        device = self.class_is_thing.device
        logits = torch.cat(logits).to(device=device, dtype=torch.float32) if logits else \
            torch.zeros(0, len(self.class_names), device=device)
        return retrieval_from_logits(logits, self.class_is_thing, self.tau, self.normalize_text)

    def extra_repr(self) -> str:
        return f'cache={self.cache!r}, tau={self.tau}, normalize_text={self.normalize_text}'
