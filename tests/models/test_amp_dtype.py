"""The P-VLM's mixed-precision path checked by the dtype seen *inside* its tower.

A cosine comparison with the fp32 result cannot tell a silent fp32 run from a bf16 one (the fp32
run passes bit-exactly); forward hooks on every Linear / Conv2d of the tower record the dtype of
what each layer computes and whether autocast was active while it ran.
"""
import os.path as osp

import pytest
import torch
from torch import nn

from densevlm_mm.registry import MODELS
from densevlm_mm.utils import register_all_modules
from densevlm_mm.apis.tiny_demo import TEACHER

register_all_modules(init_default_scope=True)

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def _retriever(demo, precision):
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='RegionRetriever',
        backbone=dict(type='DenseVLMBackbone', model_name=TEACHER,
                      pretrained=osp.join(demo, 'checkpoints', 'teacher.pt')),
        text_embeddings=osp.join(demo, 'text', 'teacher_vocabulary.pt'),
        precision=precision))


def _record(module):
    seen, handles = [], []
    for name, m in module.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            def hook(mod, args, out, name=name):
                seen.append((name, out.dtype, torch.is_autocast_enabled('cpu')))
            handles.append(m.register_forward_hook(hook))
    return seen, handles


@pytest.fixture(scope='module')
def inputs():
    g = torch.Generator().manual_seed(3)
    images = torch.randn(2, 3, 64, 96, generator=g)
    boxes = [torch.tensor([[0., 0., 48., 32.], [16., 8., 96., 64.]]),
             torch.tensor([[8., 8., 40., 56.]])]
    return images, boxes


@pytest.mark.parametrize('precision', ['fp32', 'bf16', 'fp16'])
def test_retriever_tower_runs_in_requested_precision(demo, inputs, precision):
    retriever = _retriever(demo, precision)
    seen, handles = _record(retriever.backbone.visual)
    try:
        out = retriever(*inputs)
    finally:
        for h in handles:
            h.remove()
    linears = [s for s in seen if 'proj' in s[0] or 'fc' in s[0] or 'head' in s[0]]
    assert len(linears) >= 4, seen  # every block's projections were seen
    want = DTYPES[precision]
    assert {dtype for _, dtype, _ in seen} == {want}, seen
    assert all(enabled == (precision != 'fp32') for _, _, enabled in seen)
    # outside the tower everything is fp32 again, and autocast is off after the call
    assert out['feats'].dtype == torch.float32 and out['conf'].dtype == torch.float32
    assert not torch.is_autocast_enabled('cpu')
    assert torch.isfinite(out['feats']).all()


def test_low_precision_changes_numbers_but_not_much(demo, inputs):
    """bf16 differs from fp32 (a silent fp32 run would be bit-identical) by bf16-sized amounts."""
    a = _retriever(demo, 'fp32')(*inputs)['feats']
    b = _retriever(demo, 'bf16')(*inputs)['feats']
    assert not torch.equal(a, b)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert cos.min() > 0.98
