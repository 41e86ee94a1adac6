"""Bad hyper-parameters of the method raise at construction, naming the input and the fix.

A value from a config or ``--cfg-options`` may be a string (``theta='0.3'``), NaN, a bool or out of
range; each case below must fail with a ``ValueError`` whose message names the argument, what is
allowed, and how to write it — never train with a silently converted or meaningless value.
"""
import math
import os

import pytest
import torch

from densevlm_mm.engine.hooks import SkippedImagesHook, WeightEnsembleHook
from densevlm_mm.engine.schedulers import CosineAfterWarmupLR
from densevlm_mm.models.crop_teacher import CropTeacher
from densevlm_mm.models.heads import DenseVLMHead, RegionCLIPHead
from densevlm_mm.models.losses import (CLIPSelfLoss, DecoupledAlignLoss, LogitsKDLoss,
                                       RegionCLIPLoss)
from densevlm_mm.models.retrieval import RegionRetriever
from densevlm_mm.utils.checks import check_bool, check_choice, check_number

NAN = float('nan')
# Never built: the checks run before the backbone / files are touched.
BACKBONE = dict(type='DenseVLMBackbone', model_name='densevlm-tiny-vit')


def _retriever(**kw):
    return RegionRetriever(backbone=BACKBONE, text_embeddings='never-read.pt', **kw)


def _dense_vlm(**kw):
    from densevlm_mm.models.algorithms import DenseVLM
    return DenseVLM(backbone=BACKBONE, **kw)


# (what, build, fragments the message must contain: the input, the allowed range / type, a fix)
CASES = [
    ('theta above 1', lambda: DecoupledAlignLoss(theta=1.5), ['theta', '[0, 1]', 'theta=0.3']),
    ('theta below 0', lambda: DecoupledAlignLoss(theta=-0.1), ['theta', '[0, 1]', 'theta=0.3']),
    ('theta NaN', lambda: DecoupledAlignLoss(theta=NAN), ['theta', 'finite', 'theta=0.3']),
    ('theta string', lambda: DecoupledAlignLoss(theta='0.3'),
     ['theta', "'0.3' (str)", 'without quotes', 'stays a string']),
    ('theta bool', lambda: DecoupledAlignLoss(theta=True), ['theta', 'True (bool)', '[0, 1]']),
    ('mode', lambda: DecoupledAlignLoss(mode='decoupled'),
     ['mode', "'densevlm'", "'fully_decoupled'"]),
    ('reduction', lambda: DecoupledAlignLoss(reduction='sum'),
     ['reduction', "['reference', 'mean']"]),
    ('loss_weight negative', lambda: DecoupledAlignLoss(loss_weight=-1.0),
     ['loss_weight', '[0, inf)', 'loss_weight=1.0']),
    ('tau in the loss config', lambda: DecoupledAlignLoss(tau=0.01),
     ['tau', 'model.target_generator.tau', 'remove it from the loss config']),
    ('normalize_text in the loss config', lambda: LogitsKDLoss(normalize_text=False),
     ['normalize_text', 'model.target_generator.normalize_text']),
    ('standalone tau string',
     lambda: DecoupledAlignLoss()(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(2, 2),
                                  torch.zeros(2, 2), torch.tensor([True, False]), tau='abc'),
     ['tau', "'abc' (str)", '(0, inf)']),
    ('retriever tau string', lambda: _retriever(tau='abc'),
     ['RegionRetriever', 'tau', "'abc' (str)", '(0, inf)', 'tau=0.01']),
    ('retriever tau zero', lambda: _retriever(tau=0.0), ['tau', '(0, inf)', 'tau=0.01']),
    ('retriever tau NaN', lambda: _retriever(tau=NAN), ['tau', 'finite']),
    ('retriever normalize_text string', lambda: _retriever(normalize_text='False'),
     ['normalize_text', 'True or False', 'without quotes']),
    ('retriever precision', lambda: _retriever(precision='int8'),
     ['precision', "'bf16'", "'fp32'"]),
    ('logits-KD weight string', lambda: LogitsKDLoss(weight='1'),
     ['LogitsKDLoss', 'weight', "'1' (str)", 'weight=1.0']),
    ('CLIPSelf weight NaN', lambda: CLIPSelfLoss(weight=NAN),
     ['CLIPSelfLoss', 'weight', 'finite']),
    ('RegionCLIP classes zero', lambda: RegionCLIPLoss(num_sampled_classes=0),
     ['num_sampled_classes', 'integer', 'num_sampled_classes=100']),
    ('RegionCLIP classes float', lambda: RegionCLIPLoss(num_sampled_classes=2.5),
     ['num_sampled_classes', 'an integer', '2.5 (float)']),
    ('RegionCLIP head logit_scale', lambda: RegionCLIPHead('never-read.pt', logit_scale=-100.0),
     ['RegionCLIPHead', 'logit_scale', '(0, inf)', 'logit_scale=100.0']),
    ('head with a loss that takes no retrieval',
     lambda: DenseVLMHead(loss=dict(type='CLIPSelfLoss'), text_embeddings='never-read.pt'),
     ['DenseVLMHead', 'CLIPSelfLoss', 'DecoupledAlignLoss or LogitsKDLoss']),
    ('crop teacher chunk_size', lambda: CropTeacher(BACKBONE, chunk_size=0),
     ['CropTeacher', 'chunk_size', 'chunk_size=256']),
    ('eval_topk', lambda: _dense_vlm(eval_topk='5'), ['DenseVLM', 'eval_topk', "'5' (str)"]),
    ('ensemble alpha NaN', lambda: WeightEnsembleHook(alpha=NAN),
     ['WeightEnsembleHook', 'alpha', 'finite', 'alpha=0.9']),
    ('ensemble alpha string', lambda: WeightEnsembleHook(alpha='0.9'),
     ['WeightEnsembleHook', 'alpha', "'0.9' (str)", 'without quotes']),
    ('ensemble alpha negative', lambda: WeightEnsembleHook(alpha=-0.5), ['alpha', '[0, inf)']),
    ('skipped-images interval', lambda: SkippedImagesHook(interval=0),
     ['SkippedImagesHook', 'interval', 'interval=50']),
    ('warm-up iterations', lambda: CosineAfterWarmupLR(None, warmup_iters=-1),
     ['CosineAfterWarmupLR', 'warmup_iters', 'warmup_iters=1000']),
]


@pytest.mark.parametrize('what,build,fragments', CASES, ids=[c[0] for c in CASES])
def test_bad_hyper_parameter_raises_naming_it(what, build, fragments):
    with pytest.raises(ValueError) as info:
        build()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f'{what}: {fragment!r} not in {message!r}'


def test_good_values_pass_and_are_normalised():
    assert check_number(1, 'theta', 'X', low=0, high=1) == 1.0
    assert isinstance(check_number(3, 'k', 'X', low=1, integer=True), int)
    assert check_number(0.0, 'alpha', 'X', low=0) == 0.0  # bounds are inclusive by default
    with pytest.raises(ValueError, match=r'\(0, inf\)'):
        check_number(0.0, 'tau', 'X', low=0, low_open=True)
    with pytest.raises(ValueError, match='inf'):
        check_number(math.inf, 'tau', 'X', low=0)
    assert check_bool(False, 'normalize_text', 'X') is False
    assert check_choice('mean', 'reduction', 'X', ['reference', 'mean']) == 'mean'
    # the valid edge values of the method
    assert DecoupledAlignLoss(theta=0).theta == 0.0 and DecoupledAlignLoss(theta=1).theta == 1.0
    assert WeightEnsembleHook(alpha=2.0).enabled is False  # the reference's "off"


def test_image_folder_link_loop_is_named(tmp_path):
    from densevlm_mm.datasets.image_folder import ImageFolderDataset
    (tmp_path / 'a').mkdir()
    (tmp_path / 'a' / 'x.jpg').write_bytes(b'not decoded here')
    os.symlink('..', tmp_path / 'a' / 'up')
    with pytest.raises(OSError, match='symbolic link loop.*remove the link'):
        ImageFolderDataset(data_root=str(tmp_path))
