"""Every config under configs/ loads, names only registered modules, and builds its model with
tiny stand-ins (same backbone family, random weights, embedding files for its vocabulary)."""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from densevlm_mm.registry import (DATASETS, HOOKS, METRICS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS,
                                  OPTIM_WRAPPERS, PARAM_SCHEDULERS, TRANSFORMS)
from densevlm_mm.utils import register_all_modules
from densevlm_mm.vocabulary import bundled_vocabularies

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The method's configs (scope densevlm_mm) are built here; the downstream folders (mmdet / mmseg
# scopes) have their own config tests, checked by test_every_config_folder_is_tested.
METHOD_DIRS = ('densevlm', 'baselines', 'region_cls')
DOWNSTREAM_CONFIG_TESTS = {'fvit': 'tests/models/test_fvit_configs.py',
                           'san': 'tests/models/test_san_configs.py',
                           'catseg': 'tests/models/test_catseg_runner.py'}
CONFIGS = sorted(p for d in METHOD_DIRS
                 for p in glob.glob(osp.join(REPO, 'configs', d, '**', '*.py'), recursive=True)
                 if '_base_' not in p)
TINY = {'eva02': ('densevlm-tiny-eva02', 3), 'vit': ('densevlm-tiny-vit', 3),
        'rn': ('densevlm-tiny-rn', 5), 'convnext': ('densevlm-tiny-convnext', 5)}
EVAL_VOCAB = {'CocoPanopticRegionDataset': 'coco_panoptic_133',
              'ADE20KPanopticRegionDataset': 'ade20k_panoptic_150'}

register_all_modules(init_default_scope=True)


def family(model_name: str) -> str:
    low = model_name.lower()
    for key in ('eva02', 'convnext'):
        if key in low:
            return key
    return 'rn' if low.startswith('rn') else 'vit'


class StandIns:
    """Tiny checkpoints and embedding files, made once per (model, vocabulary)."""

    def __init__(self, root: str) -> None:
        self.root, self.cache = root, {}

    def checkpoint(self, name: str) -> str:
        key = ('ckpt', name)
        if key not in self.cache:
            from densevlm_mm.models.clip_factory import create_clip
            torch.manual_seed(0)
            model, _ = create_clip(name)
            path = osp.join(self.root, f'{name}.pt')
            torch.save(model.state_dict(), path)
            self.cache[key] = path
        return self.cache[key]

    def text(self, name: str, vocabulary: str) -> str:
        key = ('text', name, vocabulary)
        if key not in self.cache:
            from densevlm_mm.text_embeddings import generate_text_embedding_file
            path = osp.join(self.root, f'{name}_{osp.basename(vocabulary)}.pt')
            generate_text_embedding_file(name, self.checkpoint(name), vocabulary, path,
                                         templates=['a photo of a {}.'], progress=False)
            self.cache[key] = path
        return self.cache[key]


    def region_cache(self, retriever: dict) -> str:
        """An empty region cache whose key is the stand-in P-VLM's (meta.json only)."""
        from densevlm_mm.models.cached_retrieval import teacher_cache_key
        from densevlm_mm.region_cache import cache_grid_pairs, make_meta, write_meta
        teacher, text = teacher_cache_key(retriever)
        path = osp.join(self.root, f'region_cache_{len(self.cache)}')
        write_meta(path, make_meta(teacher, text, dict(size=[512, 512]), cache_grid_pairs(6)))
        self.cache[('cache', path)] = path
        return path


@pytest.fixture(scope='module')
def standins(tmp_path_factory):
    return StandIns(str(tmp_path_factory.mktemp('standins')))


def tiny_model_cfg(model: dict, cfg: Config, standins: StandIns) -> dict:
    model = copy.deepcopy(model)

    def backbone(node: dict, teacher: bool) -> str:
        fam = family(node['model_name'])
        name, groups = TINY[fam]
        if teacher and fam == 'eva02':
            name = 'densevlm-tiny-eva02-teacher'
        node['model_name'] = name
        node['pretrained'] = standins.checkpoint(name)
        if node.get('unlocked_groups') is not None:
            node['unlocked_groups'] = min(node['unlocked_groups'], groups)
        return name

    def vocab(node: dict) -> str:
        name = node.get('vocabulary') or 'coco_panoptic_133'
        if name not in bundled_vocabularies() and not osp.isfile(name):
            name = 'coco_panoptic_133'  # e.g. the tiny demo's generated vocabulary
        if 'vocabulary' in node:
            node['vocabulary'] = name
        return name

    student = backbone(model['backbone'], teacher=False)
    gen = model.get('target_generator')
    if gen is not None:
        teacher = backbone(gen['backbone'], teacher=gen['type'] in ('RegionRetriever',
                                                                    'CachedRegionRetriever'))
        if 'text_embeddings' in gen:
            gen['text_embeddings'] = standins.text(teacher, vocab(gen))
        if gen['type'] == 'CachedRegionRetriever':
            gen['cache'] = standins.region_cache(gen)
    head = model.get('head')
    if head is not None and 'text_embeddings' in head:
        head['text_embeddings'] = standins.text(student, vocab(head))
    if head is not None and 'noun_embeddings' in head:  # RegionCLIPHead
        head['noun_embeddings'] = standins.text(student, 'coco_stuff_171')
    if model.get('eval_text_embeddings'):
        val_type = cfg.val_dataloader.dataset.type
        model['eval_text_embeddings'] = standins.text(student, EVAL_VOCAB[val_type])
    return model


def _assert_registered(registry, cfg_type: str, where: str) -> None:
    assert isinstance(cfg_type, str) and registry.get(cfg_type) is not None, \
        f'{where}: type {cfg_type!r} is not registered'


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.relpath(p, REPO) for p in CONFIGS])
def test_config_builds_with_tiny_standins(path, standins):
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'densevlm_mm'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if loader is None:
            continue
        _assert_registered(DATASETS, loader.dataset.type, key)
        for step in loader.dataset.get('pipeline', []):
            _assert_registered(TRANSFORMS, step['type'], f'{key} pipeline')
    for key in ('val_evaluator', 'test_evaluator'):
        if cfg.get(key):
            _assert_registered(METRICS, cfg[key].type, key)
    for hook in cfg.get('custom_hooks', []):
        _assert_registered(HOOKS, hook['type'], 'custom_hooks')
    for sched in cfg.get('param_scheduler', []) or []:
        _assert_registered(PARAM_SCHEDULERS, sched['type'], 'param_scheduler')
    if cfg.get('optim_wrapper'):
        _assert_registered(OPTIM_WRAPPERS, cfg.optim_wrapper.type, 'optim_wrapper')
        if cfg.optim_wrapper.get('constructor'):
            _assert_registered(OPTIM_WRAPPER_CONSTRUCTORS, cfg.optim_wrapper.constructor,
                               'optim_wrapper.constructor')
    if cfg.get('train_dataloader') is not None:
        assert cfg.auto_scale_lr.base_batch_size > 0
    gen = cfg.model.get('target_generator') or {}
    if gen.get('type') == 'CachedRegionRetriever':  # one cache for the model and the workers
        readers = [s.cache for s in cfg.train_dataloader.dataset.pipeline
                   if s.type == 'LoadRegionTargets']
        assert readers == [gen.cache] == [cfg.region_cache]
    model = MODELS.build(tiny_model_cfg(cfg.model.to_dict(), cfg, standins))
    size = 4 * model.backbone.stride
    dense = model.backbone.dense_features(torch.zeros(1, 3, size, size))
    assert dense.shape[:2] == (1, model.backbone.embed_dim)
    assert model.eval_class_names is not None  # every config evaluates region classification


def test_every_config_folder_is_tested():
    """No config folder escapes a build test: ours here, downstream ones in their own file."""
    import os
    folders = sorted(d for d in os.listdir(osp.join(REPO, 'configs'))
                     if osp.isdir(osp.join(REPO, 'configs', d)) and d != '_base_')
    for folder in folders:
        assert folder in METHOD_DIRS or osp.isfile(
            osp.join(REPO, DOWNSTREAM_CONFIG_TESTS.get(folder, 'none'))), \
            f'configs/{folder}/ has no config test (add it to METHOD_DIRS or DOWNSTREAM_CONFIG_TESTS)'
    assert all(osp.isfile(osp.join(REPO, t)) for f, t in DOWNSTREAM_CONFIG_TESTS.items()
               if f in folders)


def test_config_list_covers_the_paper_grid():
    names = {osp.basename(p) for p in CONFIGS}
    for needle in ('mode-all', 'mode-fully-decoupled', 'mode-thing-all', 'vocab-133',
                   'vocab-171', 'vocab-273', 'theta-0.0', 'theta-0.6', 'clipself_',
                   'logitskd_', 'regionclip_', 'sa1b', 'region-cls_eva02-b16_ade'):
        assert any(needle in n for n in names), needle
