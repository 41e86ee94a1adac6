"""``DenseVLM.predict`` checked by value: the ranked classes of every box and mask region equal an
independent computation (dense map -> RoIAlign / area-coverage mask pooling of the L2-normalised
map -> cosine with the L2-normalised evaluation text rows -> descending order), and the number
of ranked classes sits at its boundary (``eval_topk`` below, at and above the class count)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from densevlm_mm.registry import DATASETS, MODELS
from densevlm_mm.text_embeddings import load_text_embeddings
from densevlm_mm.utils import register_all_modules
from densevlm_mm.apis.tiny_demo import load_tiny_demo_config

register_all_modules(init_default_scope=True)


@pytest.fixture(scope='module')
def setup(demo):
    cfg = load_tiny_demo_config(demo)
    model_cfg = copy.deepcopy(cfg.model.to_dict())
    model_cfg.pop('target_generator')  # evaluation only: no P-VLM needed
    model_cfg.pop('head')
    torch.manual_seed(0)
    model = MODELS.build(model_cfg).eval()
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    items = [dataset[i] for i in range(3)]
    data = model.data_preprocessor(dict(inputs=[it['inputs'] for it in items],
                                        data_samples=[it['data_samples'] for it in items]), False)
    text = load_text_embeddings(model_cfg['eval_text_embeddings']).embeddings.float()
    return model, model_cfg, data, F.normalize(text, dim=-1)


def _reference_scores(model, data, text):
    """Box and mask scores ``[K, C]`` computed here, step by step."""
    bb = model.backbone
    inputs, samples = data['inputs'], data['data_samples']
    with torch.no_grad():
        dense = F.normalize(bb.dense_features(inputs).float(), dim=1)  # per-location unit norm
    s = bb.stride
    h, w = dense.shape[-2:]
    assert inputs.shape[-2:] == (h * s, w * s)  # input a multiple of the stride: area pooling
    rois = torch.cat([torch.cat([torch.full((len(smp.region_boxes), 1), float(i)),
                                 smp.region_boxes.float()], 1) for i, smp in enumerate(samples)])
    box = roi_align(dense, rois, (1, 1), spatial_scale=1.0 / s, sampling_ratio=-1,
                    aligned=True)[:, :, 0, 0]
    mask = []
    for i, smp in enumerate(samples):
        wts = F.adaptive_avg_pool2d(smp.region_masks.float(), (h, w))  # [K, h, w] coverage
        mask.append((wts[:, None] * dense[i][None]).sum((2, 3)) / wts.sum((1, 2))[:, None])
    mask = torch.cat(mask)
    return F.normalize(box, dim=-1) @ text.t(), F.normalize(mask, dim=-1) @ text.t()


def _ranks(scores, k):
    return torch.argsort(scores, dim=-1, descending=True, stable=True)[:, :k]


def test_predict_ranks_equal_independent_computation(setup):
    model, _, data, text = setup
    samples = copy.deepcopy(data['data_samples'])
    out = model.predict(data['inputs'], samples)
    box_scores, mask_scores = _reference_scores(model, data, text)
    k = model.eval_topk
    assert k < text.shape[0]
    counts = [len(s.region_boxes) for s in out]
    assert sum(counts) == box_scores.shape[0] and min(counts) > 0
    got_box = torch.cat([s.pred_box_topk for s in out])
    got_mask = torch.cat([s.pred_mask_topk for s in out])
    # ties would make the order ambiguous: the reference scores have distinct top-k values
    for scores in (box_scores, mask_scores):
        top = scores.sort(dim=-1, descending=True).values[:, :k + 1]
        assert (top[:, :-1] - top[:, 1:]).min() > 1e-5
    assert torch.equal(got_box, _ranks(box_scores, k))
    assert torch.equal(got_mask, _ranks(mask_scores, k))
    # the two region types are ranked from different features: a mix-up cannot pass
    assert not torch.equal(_ranks(box_scores, k), _ranks(mask_scores, k))


def test_predict_without_masks_ranks_boxes_only(setup):
    model, _, data, text = setup
    samples = copy.deepcopy(data['data_samples'])
    for s in samples:
        del s.region_masks
    out = model.predict(data['inputs'], samples)
    box_scores, _ = _reference_scores(model, data, text)
    assert all('pred_mask_topk' not in s for s in out)
    assert torch.equal(torch.cat([s.pred_box_topk for s in out]),
                      _ranks(box_scores, model.eval_topk))


@pytest.mark.parametrize('delta', [-1, 0, 1])
def test_predict_topk_at_class_count(setup, delta):
    """``eval_topk`` one below, at and one above the number of classes C: C-1, C and C columns."""
    model, model_cfg, data, text = setup
    num_classes = text.shape[0]
    model.eval_topk = num_classes + delta
    try:
        out = model.predict(data['inputs'], copy.deepcopy(data['data_samples']))
    finally:
        model.eval_topk = model_cfg.get('eval_topk', 5)
    box_scores, mask_scores = _reference_scores(model, data, text)
    width = min(num_classes, num_classes + delta)
    got_box = torch.cat([s.pred_box_topk for s in out])
    got_mask = torch.cat([s.pred_mask_topk for s in out])
    assert got_box.shape[1] == got_mask.shape[1] == width
    assert torch.equal(got_box, _ranks(box_scores, width))
    assert torch.equal(got_mask, _ranks(mask_scores, width))
    if width == num_classes:  # every class listed once: a permutation per region
        assert torch.equal(got_box.sort(dim=1).values,
                           torch.arange(num_classes).expand_as(got_box))
