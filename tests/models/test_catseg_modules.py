"""CAT-Seg modules on tiny random CLIP towers: values of the cost volume and the class aggregation
against straightforward computations, the q/v-only trainable split, frozen key weights under AdamW,
embedding-file checks, the student drop-in and the test-time paths."""
import copy

import pytest
import torch
import torch.nn.functional as F


from densevlm_mm.models.segmentors import CATSeg  # noqa: E402
from densevlm_mm.models.segmentors.catseg_attention_finetune import (  # noqa: E402
    enable_qv_finetuning, split_fused_qkv)
from densevlm_mm.models.segmentors.catseg_head import (ClassAggregation, cost_volume,  # noqa: E402
                                                      linear_attention)

CLASSES = ['sky', 'car', 'grass', 'person', 'road', 'dog']
HEAD = dict(type='CATSegHead', hidden_dim=16, appearance_guidance_dim=8, text_guidance_dim=8,
            num_layers=1, num_heads=2, window_size=2, pooling_size=(2, 2), pad_len=8,
            clip_upsample_dims=(16, 8), decoder_dims=(16, 8), decoder_guidance_dims=(8, 4))
PREPROCESSOR = dict(type='mmseg.SegDataPreProcessor', mean=[122.8, 116.7, 104.1],
                    std=[68.5, 66.6, 70.3], bgr_to_rgb=True, size=(64, 64))


pytestmark = pytest.mark.usefixtures('one_torch_thread')



def tiny_catseg(family: str = 'densevlm-tiny-vit', **kwargs) -> CATSeg:
    cfg = dict(backbone=dict(type='DenseVLMBackbone', model_name=family, out_indices=(0, 1)),
               text_encoder=dict(type='CATSegTextEncoder', model_name=family),
               decode_head=copy.deepcopy(HEAD), train_classes=CLASSES, clip_resolution=(64, 64),
               data_preprocessor=PREPROCESSOR)
    cfg.update(kwargs)
    torch.manual_seed(0)
    return CATSeg(**cfg)


def data_samples(gt: torch.Tensor):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    out = []
    for g in gt:
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=g[None])
        out.append(s)
    return out


# ----------------------------------------------------------------------------------- values
def test_cost_volume_equals_per_pair_cosine():
    torch.manual_seed(0)
    dense, text = torch.randn(2, 7, 3, 4), torch.randn(5, 3, 7)
    corr = cost_volume(dense, text)
    assert corr.shape == (2, 3, 5, 3, 4)
    for b in range(2):
        for p in range(3):
            for t in range(5):
                for y in range(3):
                    for x in range(4):
                        u, v = dense[b, :, y, x], text[t, p]
                        cos = float(u @ v / (u.norm() * v.norm()))
                        assert corr[b, p, t, y, x].item() == pytest.approx(cos, abs=1e-5)


def test_linear_attention_equals_explicit_kernel_sum():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 3, 5), torch.randn(2, 6, 3, 5), torch.randn(2, 6, 3, 5)
    out = linear_attention(q, k, v, eps=1e-6)
    phi = lambda t: torch.where(t > 0, t + 1, torch.exp(t))  # elu(t) + 1
    for n in range(2):
        for h in range(3):
            for l in range(4):
                w = torch.stack([phi(q[n, l, h]) @ phi(k[n, s, h]) for s in range(6)])
                expect = (w[:, None] * v[n, :, h]).sum(0) / (w.sum() + 1e-6)
                torch.testing.assert_close(out[n, l, h], expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('pad_len', [0, 8])
def test_class_aggregation_equals_per_location_computation(pad_len):
    """No pooling: each location's T class tokens (plus pad tokens) attend linearly to each other."""
    torch.manual_seed(0)
    b, c, t, h, w, g_dim, heads = 2, 8, 5, 2, 3, 4, 2
    layer = ClassAggregation(c, g_dim, heads, pooling_size=None, pad_len=pad_len)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3)
    x, guidance = torch.randn(b, c, t, h, w), torch.randn(t, g_dim)
    out = layer(x, guidance)
    phi = lambda z: F.elu(z) + 1
    for bi in range(b):
        for y in range(h):
            for xi in range(w):
                tokens, g = x[bi, :, :, y, xi].T, guidance  # [T, C], [T, Cg]
                if pad_len:
                    tokens = torch.cat([tokens, layer.pad_tokens[0].expand(pad_len - t, c)])
                    g = torch.cat([g, layer.pad_guidance.expand(pad_len - t, -1)])
                n1 = F.layer_norm(tokens, (c, ), layer.norm1.weight, layer.norm1.bias)
                q = F.linear(torch.cat([n1, g], 1), layer.q.weight, layer.q.bias)
                k = F.linear(torch.cat([n1, g], 1), layer.k.weight, layer.k.bias)
                v = F.linear(n1, layer.v.weight, layer.v.bias)
                att = torch.zeros_like(tokens)
                d = c // heads
                for hd in range(heads):
                    sl = slice(hd * d, (hd + 1) * d)
                    weights = phi(q[:, sl]) @ phi(k[:, sl]).T  # [L, S]
                    att[:, sl] = weights @ v[:, sl] / (weights.sum(1, keepdim=True) + 1e-6)
                y1 = tokens + att
                y2 = y1 + layer.mlp(F.layer_norm(y1, (c, ), layer.norm2.weight, layer.norm2.bias))
                expect = x[bi, :, :, y, xi] + y2[:t].T  # CAT-Seg adds the updated tokens to x
                torch.testing.assert_close(out[bi, :, :, y, xi], expect, atol=1e-4, rtol=1e-4)


def test_bce_loss_values():
    from densevlm_mm.models.segmentors.catseg_head import CATSegHead
    logits = torch.tensor([[[[2.0, -1.0]], [[0.5, 3.0]]]])  # [1, 2 classes, 1, 2]
    gt = torch.tensor([[[1, 255]]])
    bce = lambda z, t: -(t * F.logsigmoid(torch.tensor(z)) + (1 - t) * F.logsigmoid(
        -torch.tensor(z)))
    # pixel 0: class 1; pixel 1: ignored -> all-negative (CAT-Seg) or dropped
    terms = [bce(2.0, 0), bce(0.5, 1), bce(-1.0, 0), bce(3.0, 0)]
    assert CATSegHead.loss_by_logits(logits, gt).item() == pytest.approx(
        float(sum(terms) / 4), abs=1e-6)
    assert CATSegHead.loss_by_logits(logits, gt, ignore_as_negative=False).item() == \
        pytest.approx(float((terms[0] + terms[1]) / 2), abs=1e-6)
    with pytest.raises(ValueError, match='outside the 2 training classes'):
        CATSegHead.loss_by_logits(logits, torch.tensor([[[2, 0]]]))


# ---------------------------------------------------------------------------- fine-tuning
def test_qkv_split_keeps_outputs_and_weights():
    from densevlm_mm.models.clip_factory import create_clip
    torch.manual_seed(0)
    clip, tok = create_clip('densevlm-tiny-vit')
    clip.eval()
    images, text = torch.randn(2, 3, 64, 64), tok(['a photo of a dog', 'grass'])
    with torch.no_grad():
        ref_i, ref_t = clip.encode_image(images), clip.encode_text(text)
    attn = clip.transformer.resblocks[0].attn
    fused = attn.in_proj_weight.detach().clone()
    enable_qv_finetuning(clip.visual)
    enable_qv_finetuning(clip)
    assert attn.in_proj_weight is None
    c = attn.embed_dim
    for i, name in enumerate(('q_proj_weight', 'k_proj_weight', 'v_proj_weight')):
        assert torch.equal(getattr(attn, name), fused[i * c:(i + 1) * c])
    with torch.no_grad():
        torch.testing.assert_close(clip.encode_image(images), ref_i)
        torch.testing.assert_close(clip.encode_text(text), ref_t)
    split_fused_qkv(attn)  # idempotent


@pytest.mark.parametrize('family', ['densevlm-tiny-vit', 'densevlm-tiny-eva02'])
def test_trainable_split_is_qv_plus_new_modules(family):
    model = tiny_catseg(family)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {f'decode_head.{n}' for n, _ in model.decode_head.named_parameters()}
    vit = family.endswith('vit')
    qv_img = ({f'backbone.visual.transformer.resblocks.{i}.attn.{w}_proj_weight'
               for i in range(3) for w in 'qv'} if vit else
              {f'backbone.visual.trunk.blocks.{i}.attn.{w}_proj.weight'
               for i in range(3) for w in 'qv'})
    # the last block is value-only in the dense map: its query is never reached
    qv_img -= {'backbone.visual.transformer.resblocks.2.attn.q_proj_weight',
               'backbone.visual.trunk.blocks.2.attn.q_proj.weight'}
    text_prefix = 'text_encoder.clip.transformer' if vit else 'text_encoder.clip.text.transformer'
    qv_txt = {f'{text_prefix}.resblocks.{i}.attn.{w}_proj_weight' for i in range(2) for w in 'qv'}
    assert trainable == head | qv_img | qv_txt
    assert set(model.trainable_clip_params) == qv_img | qv_txt
    # every trainable parameter gets a gradient from the loss
    gt = torch.randint(0, 6, (2, 64, 64))
    model.loss(torch.randn(2, 3, 64, 64), data_samples(gt))['decode.loss_bce'].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_adamw_steps_move_only_qv_and_head():
    from mmengine.optim import build_optim_wrapper
    model = tiny_catseg()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.5),
        paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1),
                                        'text_encoder': dict(lr_mult=0.1)})))
    gt = torch.randint(0, 6, (2, 64, 64))
    for _ in range(3):
        loss = model.loss(torch.randn(2, 3, 64, 64), data_samples(gt))['decode.loss_bce']
        wrapper.update_params(loss)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[n]), f'{n} did not train'
        else:
            assert torch.equal(p, before[n]), f'frozen {n} moved'
    keys = [n for n in before if n.endswith('k_proj_weight')]
    assert len(keys) == 5  # 3 image blocks + 2 text blocks, all frozen and unchanged


# ----------------------------------------------------------------------------- text files
def _embedding_file(tmp_path, names, dim, name='emb.pt'):
    from densevlm_mm.text_embeddings import TextEmbeddings
    path = str(tmp_path / name)
    TextEmbeddings(torch.randn(len(names), dim), list(names),
                   torch.zeros(len(names), dtype=torch.bool)).save(path)
    return path


def test_text_embedding_file_mismatch_fails_at_build(tmp_path):
    wrong_classes = _embedding_file(tmp_path, ['sky', 'car', 'grass', 'person', 'road', 'cat'], 32)
    with pytest.raises(ValueError, match="class 5 is 'cat' in the file but 'dog'"):
        tiny_catseg(train_text_embeddings=wrong_classes)
    fewer = _embedding_file(tmp_path, CLASSES[:4], 32, 'fewer.pt')
    with pytest.raises(ValueError, match='has 4 classes but the dataset has 6'):
        tiny_catseg(test_text_embeddings=fewer, train_text_embeddings=fewer)
    wrong_dim = _embedding_file(tmp_path, CLASSES, 48, 'dim.pt')
    with pytest.raises(ValueError, match='48-d embeddings but the model embeds into 32'):
        tiny_catseg(train_text_embeddings=wrong_dim)


def test_text_embedding_files_freeze_the_text_tower(tmp_path):
    path = _embedding_file(tmp_path, CLASSES, 32)
    model = tiny_catseg(train_text_embeddings=path, test_text_embeddings=path)
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    assert model.decode_head.num_prompts == 1
    model.eval()
    with torch.no_grad():
        assert model.text_features().shape == (6, 1, 32)
        assert model.predict(torch.randn(1, 3, 64, 64))[0].pred_sem_seg.data.max() < 6
    with pytest.raises(ValueError, match='templates per class'):  # file (P=1) vs 63 templates
        tiny_catseg(train_text_embeddings=path,
                    text_encoder=dict(type='CATSegTextEncoder', model_name='densevlm-tiny-vit',
                                      templates='densevlm-63'))


def test_per_template_text_and_eval_cache():
    model = tiny_catseg(text_encoder=dict(type='CATSegTextEncoder', model_name='densevlm-tiny-vit',
                                          templates=['a photo of a {}.', 'the {} in the scene.']))
    assert model.decode_head.num_prompts == 2
    text = model.text_features()
    assert text.shape == (6, 2, 32) and text.requires_grad
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(6, 2))
    # first synonym only; DenseVLM's prompt rule adds 'This is ' before a/the (spec §7.1)
    assert model.text_encoder.prompts(['person, individual'])[1] == \
        'This is the person in the scene.'
    model.eval()
    with torch.no_grad():
        first = model.text_features()
        assert model.text_features() is first  # cached in eval mode
    model.train()
    assert not model.text_encoder._cache


# ------------------------------------------------------------------------ backbone drop-in
def test_student_work_dir_checkpoint_drops_in(tmp_path):
    from densevlm_mm.models.backbones import DenseVLMBackbone
    torch.manual_seed(1)
    student = DenseVLMBackbone('densevlm-tiny-vit')
    path = str(tmp_path / 'epoch_5.pth')
    torch.save(dict(meta=dict(epoch=5), state_dict={
        f'backbone.{k}': v for k, v in student.state_dict().items()}), path)
    model = tiny_catseg(backbone=dict(type='DenseVLMBackbone', model_name='densevlm-tiny-vit',
                                      pretrained=path, out_indices=(0, 1)))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone.dense_features(x), student.dense_features(x))


def test_non_vit_family_is_refused():
    with pytest.raises(NotImplementedError, match='needs a ViT image tower'):
        tiny_catseg('densevlm-tiny-rn',
                    backbone=dict(type='DenseVLMBackbone', model_name='densevlm-tiny-rn',
                                  out_indices=(0, 1)))


# --------------------------------------------------------------------------------- test time
def test_slide_inference_matches_whole_with_one_window_and_topk():
    model = tiny_catseg(test_cfg=dict(mode='slide', crop_size=(64, 64), stride=(32, 32),
                                      global_view=False))
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.inference(x, None), model.encode_decode(x).sigmoid())
        model.test_cfg = dict(mode='slide', crop_size=(64, 64), stride=(32, 32))
        probs = model.inference(torch.randn(1, 3, 96, 128), None)
        assert probs.shape == (1, 6, 96, 128) and 0 <= probs.min() and probs.max() <= 1
        # more classes than pad_len: the 8 highest-cost classes are aggregated, the rest -100
        model.set_eval_classes([f'class {i}' for i in range(11)])
        logits = model.encode_decode(x)
        kept = (logits > -100).flatten(2).all(-1)[0]
        assert logits.shape[1] == 11 and int(kept.sum()) == 8
        assert torch.all(logits[0, ~kept] == -100)
