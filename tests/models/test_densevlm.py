"""The DenseVLM algorithm on tiny random models: loss step, frozen parts, checkpoints, predict,
errors, and DDP gradient synchronisation."""
import copy
import os.path as osp
import socket

import pytest
import torch
import torch.multiprocessing as mp

from densevlm_mm.registry import DATASETS, MODELS
from densevlm_mm.text_embeddings import generate_text_embedding_file, load_text_embeddings
from densevlm_mm.utils import register_all_modules
from densevlm_mm.apis.tiny_demo import TEACHER, load_tiny_demo_config

register_all_modules(init_default_scope=True)


def build(root, **overrides):
    cfg = copy.deepcopy(load_tiny_demo_config(root).model.to_dict())
    for key, value in overrides.items():
        *parents, leaf = key.split('.')
        target = cfg
        for part in parents:
            target = target[part]
        target[leaf] = value
    torch.manual_seed(0)
    return MODELS.build(cfg)


def batch(root, split='train', n=2):
    cfg = load_tiny_demo_config(root)
    loader = cfg.train_dataloader if split == 'train' else cfg.val_dataloader
    dataset = DATASETS.build(loader.dataset)
    items = [dataset[i] for i in range(n)]
    return dict(inputs=[it['inputs'] for it in items],
                data_samples=[it['data_samples'] for it in items])


def test_loss_step_trains_only_unlocked_student_blocks(demo):
    model = build(demo)
    model.train()
    data = model.data_preprocessor(batch(demo), True)
    losses = model(**data, mode='loss')
    assert set(losses) >= {'loss_align', 'num_kept', 'num_thing', 'num_stuff'}
    assert torch.isfinite(losses['loss_align']) and losses['loss_align'].requires_grad
    assert losses['num_kept'] == losses['num_thing'] + losses['num_stuff']
    losses['loss_align'].backward()
    trunk = model.backbone.visual.trunk
    n_blocks = len(trunk.blocks)
    last = f'visual.trunk.blocks.{n_blocks - 1}.attn.'
    # the dense path skips q/k of the last block: frozen (the reference never updates them)
    assert sorted(model.backbone.frozen_unused) == sorted(
        n for n, _ in model.backbone.named_parameters()
        if n.startswith(last + 'q_proj') or n.startswith(last + 'k_proj'))
    for name, p in model.backbone.named_parameters():
        unlocked = any(f'blocks.{i}.' in name for i in range(n_blocks - 2, n_blocks))
        assert p.requires_grad == (unlocked and name not in model.backbone.frozen_unused), name
        if p.requires_grad:
            assert p.grad is not None, name
        if not unlocked:
            assert p.grad is None, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in trunk.blocks[-1].parameters())
    assert all(not p.requires_grad and p.grad is None
               for p in model.target_generator.parameters())
    # the P-VLM stays in eval mode even when the model trains
    assert not model.target_generator.backbone.training


def test_checkpoint_holds_student_not_teacher(demo):
    model = build(demo)
    sd = model.state_dict()
    assert not any(k.startswith('target_generator.') for k in sd)
    assert any(k.startswith('backbone.visual.') for k in sd)
    other = build(demo)
    with torch.no_grad():
        for p in other.backbone.parameters():
            p.add_(1.0)
    other.load_state_dict(sd, strict=True)  # teacher keys are filled from the live P-VLM
    for a, b in zip(model.backbone.parameters(), other.backbone.parameters()):
        assert torch.equal(a, b)
    assert set(model._ddp_params_and_buffers_to_ignore) == {
        f'target_generator.{n}' for n, _ in list(model.target_generator.named_parameters())
        + list(model.target_generator.named_buffers())}


def test_predict_ranks_boxes_and_masks(demo):
    model = build(demo)
    model.eval()
    data = model.data_preprocessor(batch(demo, 'val'), False)
    out = model(**data, mode='predict')
    for sample in out:
        k = len(sample.region_labels)
        assert sample.pred_box_topk.shape == (k, 5) and sample.pred_mask_topk.shape == (k, 5)
        assert sample.pred_box_topk.max() < len(model.eval_class_names)
    # predict is the same function of the image whatever else is in the batch
    single = model.data_preprocessor(batch(demo, 'val', n=1), False)
    alone = model(**single, mode='predict')[0]
    assert torch.equal(alone.pred_box_topk, out[0].pred_box_topk)


def test_reference_thing_count_reproduces_off_by_one(demo):
    model = build(demo)
    explicit = model.target_generator.class_is_thing
    ref = build(demo, **{'target_generator.reference_thing_count': int(explicit.sum())})
    flags = ref.target_generator.class_is_thing
    # vocabulary lists things first: the reference marks the last thing as stuff
    n = int(explicit.sum())
    assert explicit[:n].all() and flags[:n - 1].all() and not flags[n - 1]


def test_mismatched_embeddings_raise_clear_errors(demo, tmp_path):
    teacher_text = osp.join(demo, 'text', 'teacher_vocabulary.pt')
    with pytest.raises(ValueError, match='student model'):
        build(demo, **{'head.text_embeddings': teacher_text})
    with pytest.raises(ValueError, match='dimensions'):
        build(demo, **{'target_generator.text_embeddings':
                       osp.join(demo, 'text', 'student_vocabulary.pt')})
    with pytest.raises(ValueError, match='dimensions'):
        build(demo, eval_text_embeddings=teacher_text)
    # another vocabulary for the P-VLM: the head and the retriever disagree
    other_vocab = tmp_path / 'v.txt'
    other_vocab.write_text('thing\tzebra\nstuff\tsea\n')
    other = str(tmp_path / 'teacher_other.pt')
    generate_text_embedding_file(TEACHER, osp.join(demo, 'checkpoints', 'teacher.pt'),
                                 str(other_vocab), other, progress=False)
    with pytest.raises(ValueError, match='vocabulary'):
        build(demo, **{'target_generator.text_embeddings': other,
                       'target_generator.vocabulary': None})
    with pytest.raises(FileNotFoundError, match='tools/text_embeddings.py'):
        build(demo, **{'head.text_embeddings': str(tmp_path / 'missing.pt')})
    with pytest.raises(ValueError, match='classes'):
        load_text_embeddings(other, num_classes=8)


# ---------------------------------------------------------------- DDP gradient synchronisation
def _fixed_batch(root, n):
    """n images with the same 2x3 grid each (equal region counts per rank)."""
    from densevlm_mm.datasets.transforms.region_sampler import GridRegionSampler
    data = batch(root, n=n)
    for sample in data['data_samples']:
        sample.grid_boxes = GridRegionSampler().grid_boxes(sample.valid_hw, 2, 3)
    return data


def _student_grads(model, data):
    model.zero_grad()
    losses = model(**data, mode='loss')
    losses['loss_align'].backward()
    return {n: p.grad.clone() for n, p in model.backbone.named_parameters()
            if p.grad is not None}


def _ddp_worker(rank, world, port, root, out):
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    register_all_modules(init_default_scope=True)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=world)
    model = build(root, **{'head.loss.theta': 0.0, 'head.loss.reduction': 'mean'})
    model.train()
    ddp = MMDistributedDataParallel(module=model)
    full = _fixed_batch(root, 4)
    half = dict(inputs=full['inputs'][2 * rank:2 * rank + 2],
                data_samples=full['data_samples'][2 * rank:2 * rank + 2])
    data = model.data_preprocessor(half, True)
    model.zero_grad()
    losses = ddp(**data, mode='loss')
    losses['loss_align'].backward()
    grads = {n[len('backbone.'):]: p.grad.clone() for n, p in model.named_parameters()
             if n.startswith('backbone.') and p.grad is not None}
    torch.save(grads, osp.join(out, f'rank{rank}.pt'))
    dist.destroy_process_group()


def test_ddp_gradients_equal_single_process_on_concatenated_batch(demo, tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, demo, str(tmp_path)), nprocs=2, join=True)
    model = build(demo, **{'head.loss.theta': 0.0, 'head.loss.reduction': 'mean'})
    model.train()
    data = model.data_preprocessor(_fixed_batch(demo, 4), True)
    reference = _student_grads(model, data)
    ranks = [torch.load(tmp_path / f'rank{r}.pt') for r in range(2)]
    assert set(ranks[0]) == set(reference) and reference
    for name, grad in reference.items():
        assert torch.allclose(ranks[0][name], ranks[1][name], atol=1e-7), name
        assert torch.allclose(ranks[0][name], grad, rtol=1e-4, atol=1e-6), name


def test_retriever_runs_in_bf16_autocast(demo):
    fp32 = build(demo).target_generator
    bf16 = build(demo, **{'target_generator.precision': 'bf16'}).target_generator
    model = build(demo)
    data = model.data_preprocessor(batch(demo), False)
    boxes = [s.grid_boxes for s in data['data_samples']]
    a, b = fp32(data['inputs'], boxes), bf16(data['inputs'], boxes)
    assert b['feats'].dtype == torch.float32 and torch.isfinite(b['feats']).all()
    cos = torch.nn.functional.cosine_similarity(a['feats'], b['feats'], dim=-1)
    assert cos.min() > 0.98
    with pytest.raises(ValueError, match='precision'):
        build(demo, **{'target_generator.precision': 'int8'})


def test_one_retrieval_per_step_configured_on_the_retriever(demo, monkeypatch):
    """The P-VLM retrieves once per step; τ and the text normalisation set on the retriever are
    the ones the loss scores the student with (standalone call with the same settings)."""
    import densevlm_mm.models.losses.decoupled_align_loss as loss_module
    import densevlm_mm.models.retrieval as retrieval_module
    model = build(demo, **{'target_generator.tau': 0.05,
                           'target_generator.normalize_text': False,
                           'head.loss.theta': 0.1})
    model.eval()  # deterministic: the same student features twice
    data = model.data_preprocessor(batch(demo), True)
    calls = []
    real = retrieval_module.retrieve_regions

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(retrieval_module, 'retrieve_regions', spy)
    monkeypatch.setattr(loss_module, 'retrieve_regions', spy)
    losses = model(**data, mode='loss')
    assert len(calls) == 1
    monkeypatch.undo()
    boxes = [s.grid_boxes for s in data['data_samples']]
    with torch.no_grad():
        student = model.backbone.roi_features(model.backbone.dense_features(data['inputs']), boxes)
        targets = model.target_generator(data['inputs'], boxes)
        alone = model.head.loss_module(student, targets['feats'], model.head.text,
                                       targets['text'], targets['class_is_thing'], tau=0.05,
                                       normalize_text=False)
    assert targets['tau'] == 0.05 and targets['normalize_text'] is False
    for key in ('loss_align', 'num_kept', 'num_thing', 'num_stuff'):
        assert torch.allclose(losses[key].detach(), alone[key], rtol=1e-6, atol=1e-7), key
    # the retrieval's labels / confidences are the ones the loss thresholds
    assert losses['num_kept'].item() == int((targets['conf'] > 0.1).sum())
    default = build(demo, **{'head.loss.theta': 0.1})
    default.eval()
    assert not torch.allclose(default(**data, mode='loss')['loss_align'], losses['loss_align'])


def test_init_weights_logs_one_summary_line(demo):
    """mmengine's per-tensor "The value is the same before and after calling `init_weights`"
    records become one line (console and log file alike)."""
    import logging

    from mmengine.logging import MMLogger
    model = build(demo)
    logger = MMLogger.get_instance('densevlm_init_weights_summary', log_level='INFO')
    messages = []
    handler = logging.Handler(level=logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    try:
        before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
        model.init_weights()
    finally:
        logger.removeHandler(handler)
    assert not any('The value is the same' in m for m in messages)
    summary = [m for m in messages if m.startswith('init_weights:')]
    assert len(summary) == 1, messages
    n = len(list(model.named_parameters()))
    assert f'{n} parameter tensors unchanged' in summary[0]
    for name, p in model.backbone.named_parameters():  # checkpoint weights stay
        assert torch.equal(before[name], p), name
