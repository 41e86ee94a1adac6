"""DenseVLMHead by value: what it keeps from the student's embedding file (rows as float32, names,
producing model, a non-persistent buffer), the check of the loss type, the vocabulary check, and
its loss equal to the loss module's ``from_retrieval`` on the same inputs (mutation testing,
issue 15)."""
import pytest
import torch
import torch.nn.functional as F

from densevlm_mm.models.heads import DenseVLMHead
from densevlm_mm.models.losses import DecoupledAlignLoss
from densevlm_mm.models.retrieval import retrieve_regions
from densevlm_mm.text_embeddings import TextEmbeddings
from densevlm_mm.utils import register_all_modules

register_all_modules(init_default_scope=True)

NAMES = ['person', 'car', 'sky', 'grass', 'road']
IS_THING = torch.tensor([True, True, False, False, False])


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('head')
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(len(NAMES), 8, generator=g).double()  # stored as float32 by save()
    path = str(root / 'student.pt')
    TextEmbeddings(rows, NAMES, IS_THING, model_name='tiny-student', normalized=False).save(path)
    vocab = root / 'vocab.txt'
    vocab.write_text(''.join(f'{"thing" if t else "stuff"}\t{n}\n'
                             for n, t in zip(NAMES, IS_THING.tolist())))
    other = root / 'other.txt'
    other.write_text('thing\tzebra\nstuff\tsea\n')
    return dict(path=path, rows=rows.float(), vocab=str(vocab), other=str(other))


def test_keeps_the_file_rows_names_and_model(files):
    head = DenseVLMHead(dict(type='DecoupledAlignLoss'), files['path'])
    assert head.text.dtype == torch.float32
    assert torch.equal(head.text, files['rows'])  # as stored: not re-normalised here
    assert head.class_names == NAMES and isinstance(head.class_names, list)
    assert head.text_model_name == 'tiny-student'
    assert head.text_embeddings_file == files['path']
    assert head.embed_dim == 8
    assert isinstance(head.loss_module, DecoupledAlignLoss)
    assert head.loss_module.theta == 0.3 and head.loss_module.mode == 'densevlm'
    # the class rows come from the file at construction: not saved with the model
    assert 'text' in dict(head.named_buffers()) and 'text' not in head.state_dict()
    assert head.init_cfg is None


def test_loss_config_vocabulary_and_init_cfg_are_passed_on(files):
    head = DenseVLMHead(dict(type='DecoupledAlignLoss', theta=0.5, mode='all'), files['path'],
                        vocabulary=files['vocab'],
                        init_cfg=dict(type='Pretrained', checkpoint='x.pth'))
    assert (head.loss_module.theta, head.loss_module.mode) == (0.5, 'all')
    assert head.init_cfg == dict(type='Pretrained', checkpoint='x.pth')
    with pytest.raises(ValueError):
        DenseVLMHead(dict(type='DecoupledAlignLoss'), files['path'], vocabulary=files['other'])


def test_loss_without_from_retrieval_is_refused(files):
    with pytest.raises(ValueError, match='does not take the P-VLM retrieval'):
        DenseVLMHead(dict(type='mmpretrain.CrossEntropyLoss'), files['path'])
    # the logits-KD baseline takes it
    head = DenseVLMHead(dict(type='LogitsKDLoss'), files['path'])
    assert callable(head.loss_module.from_retrieval)


@pytest.mark.parametrize('normalize_text', [True, False])
def test_loss_equals_the_loss_module_on_the_head_rows(files, normalize_text):
    g = torch.Generator().manual_seed(1)
    teacher_text = torch.randn(len(NAMES), 6, generator=g)
    teacher = torch.randn(7, 6, generator=g)
    student = torch.randn(7, 8, generator=g, requires_grad=True)
    targets = retrieve_regions(teacher, teacher_text, IS_THING, tau=0.05,
                               normalize_text=normalize_text)
    head = DenseVLMHead(dict(type='DecoupledAlignLoss', theta=0.0), files['path'])
    out = head.loss(student, targets)
    ref = DecoupledAlignLoss(theta=0.0).from_retrieval(student, files['rows'], targets)
    assert out.keys() == ref.keys()
    for key in out:
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=0)
    # and by hand (densevlm mode, reference reduction): KL(teacher || student) per region, thing
    # regions over the thing columns, stuff regions over all columns, mean per group, summed
    s_text = F.normalize(files['rows'], dim=-1) if normalize_text else files['rows']
    s_logits = F.normalize(student, dim=-1) @ s_text.t() / 0.05
    thing_rows = IS_THING[targets['labels']]
    losses = []
    for rows, cols in ((thing_rows, IS_THING), (~thing_rows, torch.ones_like(IS_THING))):
        assert rows.any()
        t = targets['logits'][rows][:, cols].log_softmax(-1)
        s = s_logits[rows][:, cols].log_softmax(-1)
        losses.append((t.exp() * (t - s)).sum(-1).mean())
    torch.testing.assert_close(out['loss_align'], sum(losses))
    out['loss_align'].backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
