"""The fast path of issue 14 against the plain path on the tiny demo models (fp32): same loss,
same gradients, same optimizer update; fused attention in every transformer tower; the bf16
P-VLM close to fp32."""
import collections
import copy
import os.path as osp

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from densevlm_mm.apis.tiny_demo import load_tiny_demo_config
from densevlm_mm.engine.optim_constructor import merge_param_groups
from densevlm_mm.models.backbones import DenseVLMBackbone
from densevlm_mm.registry import DATASETS, MODELS
from densevlm_mm.utils import register_all_modules

register_all_modules(init_default_scope=True)
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FAST = osp.join(ROOT, 'configs', 'densevlm', 'densevlm_tiny_demo_fast.py')


def _model_and_optim(cfg):
    from mmengine.optim import build_optim_wrapper
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.train()
    return model, build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))


def _batch(cfg, n=3):
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    torch.manual_seed(1)  # grid sampling draws from the global generator here
    items = [dataset[i] for i in range(n)]
    return dict(inputs=[it['inputs'] for it in items],
                data_samples=[it['data_samples'] for it in items])


def test_fast_config_switches_the_fast_parts_on(demo):
    plain, fast = load_tiny_demo_config(demo), load_tiny_demo_config(demo, FAST)
    assert not plain.model.target_generator.get('inference_mode', False)
    assert fast.model.target_generator.inference_mode is True
    _, plain_optim = _model_and_optim(plain)
    model, fast_optim = _model_and_optim(fast)
    # mmengine's paramwise_cfg gives one group per tensor; merged: one per option set
    assert len(plain_optim.optimizer.param_groups) > 2
    assert len(fast_optim.optimizer.param_groups) == 2
    assert all(g['fused'] for g in fast_optim.optimizer.param_groups)
    assert sorted(g['weight_decay'] for g in fast_optim.optimizer.param_groups) == [0.0, 0.1]
    trained = {id(p) for g in plain_optim.optimizer.param_groups for p in g['params']}
    assert len(trained) == sum(len(g['params']) for g in fast_optim.optimizer.param_groups)


def test_fast_and_plain_path_same_loss_gradients_and_update_fp32(demo):
    plain_cfg, fast_cfg = load_tiny_demo_config(demo), load_tiny_demo_config(demo, FAST)
    plain, plain_optim = _model_and_optim(plain_cfg)
    fast, fast_optim = _model_and_optim(fast_cfg)
    data = _batch(plain_cfg)
    seen_modes = []
    dense = fast.target_generator.backbone.dense_features

    def spy(*args, **kwargs):
        seen_modes.append(torch.is_inference_mode_enabled())
        return dense(*args, **kwargs)

    fast.target_generator.backbone.dense_features = spy
    losses, grads = {}, {}
    for name, model, optim in (('plain', plain, plain_optim), ('fast', fast, fast_optim)):
        batch = model.data_preprocessor(copy.deepcopy(data), True)
        loss = model.loss(**batch)['loss_align']
        optim.backward(loss)
        grads[name] = {n: p.grad.clone() for n, p in model.backbone.named_parameters()
                       if p.grad is not None}
        optim.step()
        optim.zero_grad()
        losses[name] = loss.detach()
    assert seen_modes == [True]  # the fast P-VLM ran under inference_mode
    assert torch.isfinite(losses['plain']) and losses['plain'] > 0
    assert torch.equal(losses['plain'], losses['fast'])
    assert grads['plain'].keys() == grads['fast'].keys() and len(grads['plain']) > 10
    assert any(g.abs().sum() > 0 for g in grads['plain'].values())
    for n, g in grads['plain'].items():
        assert torch.equal(g, grads['fast'][n]), n
    # same update: the trained weights after one AdamW step (fused, merged vs for-loop)
    fast_params = dict(fast.backbone.named_parameters())
    for name, p in plain.backbone.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(fast_params[name], p, rtol=1e-5, atol=1e-6, msg=name)


def test_merged_groups_give_the_same_adamw_update():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(4)]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    per_tensor = torch.optim.AdamW([dict(params=[p], weight_decay=0.1 * (i % 2))
                                    for i, p in enumerate(params)], lr=1e-2)
    merged = merge_param_groups(torch.optim.AdamW(
        [dict(params=[p], weight_decay=0.1 * (i % 2)) for i, p in enumerate(copies)], lr=1e-2))
    assert len(merged.param_groups) == 2
    assert [len(g['params']) for g in merged.param_groups] == [2, 2]
    for _ in range(3):
        for p, c in zip(params, copies):
            p.grad = torch.randn_like(p)
            c.grad = p.grad.clone()
        per_tensor.step()
        merged.step()
    for p, c in zip(params, copies):
        torch.testing.assert_close(p, c, rtol=0, atol=1e-7)


class _OpCounter(TorchDispatchMode):

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def test_every_transformer_tower_uses_fused_attention():
    """timm Eva (fused_attn) and open_clip's nn.MultiheadAttention (need_weights=False) both
    dispatch to scaled_dot_product_attention, forward and backward; no unfused softmax."""
    for name in ('densevlm-tiny-eva02', 'densevlm-tiny-eva02-teacher', 'densevlm-tiny-vit'):
        torch.manual_seed(0)
        backbone = DenseVLMBackbone(name)
        backbone.train()
        with _OpCounter() as counter:
            backbone.dense_features(torch.randn(2, 3, 64, 64)).sum().backward()
        blocks = backbone._adapter.num_levels(backbone.visual)
        fused = {k: v for k, v in counter.ops.items() if 'scaled_dot_product' in k}
        # every block but the value-only last one attends, once forward and once backward
        assert sum(v for k, v in fused.items() if not k.endswith('backward')) == blocks - 1, name
        assert sum(v for k, v in fused.items() if k.endswith('backward')) == blocks - 1, name
        assert not any('softmax' in k for k in counter.ops), (name, counter.ops)


def test_bf16_teacher_close_to_fp32(demo):
    cfg = load_tiny_demo_config(demo)
    torch.manual_seed(0)
    fp32 = MODELS.build(copy.deepcopy(cfg.model.target_generator))
    bf16_cfg = copy.deepcopy(cfg.model.target_generator)
    bf16_cfg.update(precision='bf16', inference_mode=True)
    bf16 = MODELS.build(bf16_cfg)
    images = torch.randn(2, 3, 112, 112)
    boxes = [torch.tensor([[0., 0., 56., 56.], [20., 30., 100., 110.]]),
             torch.tensor([[10., 10., 60., 90.]])]
    a, b = fp32(images, boxes), bf16(images, boxes)
    assert a['feats'].dtype == b['feats'].dtype == torch.float32
    assert not b['feats'].is_inference()  # usable in the student's autograd graph
    cos = torch.nn.functional.cosine_similarity(a['feats'], b['feats'], dim=-1)
    assert cos.min() > 0.99, cos
    assert not torch.equal(a['feats'], b['feats'])  # bf16 really ran
