"""Values of ``densevlm_mm/text_embeddings.py``: prompt rules of spec §7.1, the prompt ensemble
against a step-by-step reference, the embedding file format and every check of its loader."""
import functools
import os.path as osp
from typing import List

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densevlm_mm.text_embeddings import (TEMPLATES, TextEmbeddings, build_text_embeddings,
                                         clean_name, generate_text_embedding_file,
                                         load_text_embeddings, make_prompts)
from densevlm_mm.vocabulary import Vocabulary

# ---------------------------------------------------------------------------------------------
# helpers: a character-level fake CLIP text tower (fast, deterministic, records its calls)


def char_tokenizer(prompts: List[str], length: int = 48) -> torch.Tensor:
    """``[N, length]`` character codes (0-padded): different prompts → different tokens."""
    out = torch.zeros(len(prompts), length, dtype=torch.long)
    for i, p in enumerate(prompts):
        codes = [ord(c) % 128 for c in p[:length]]
        out[i, :len(codes)] = torch.tensor(codes)
    return out


class FakeTextTower(torch.nn.Module):
    """``encode_text``: ``[N, L]`` tokens → ``[N, D]`` features of varied norms, in ``dtype``."""

    def __init__(self, dim: int = 6, dtype: torch.dtype = torch.float32, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(128, dim, generator=g))
        self.pos = torch.nn.Parameter(torch.rand(48, generator=g) + 0.5)
        self.out_dtype = dtype
        self.batch_sizes: List[int] = []
        self.token_devices: List[torch.device] = []

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(tokens.shape[0])
        self.token_devices.append(tokens.device)
        if tokens.device.type == 'meta':  # only the device is looked at (see the device test)
            return torch.ones(tokens.shape[0], self.table.shape[1])
        feats = (self.table[tokens] * self.pos[:tokens.shape[1], None]).sum(1)  # [N, D]
        return feats.to(self.out_dtype)


def reference_rows(model, tokenizer, names, templates, normalize: bool) -> torch.Tensor:
    """Spec §7.1 step by step: every prompt encoded alone and L2-normalised, the mean over the
    class's prompts, L2-normalised when ``normalize`` → ``[C, D]`` float32."""
    rows = []
    with torch.no_grad():
        for name in names:
            feats = []
            for prompt in make_prompts(name, templates):
                f = model.encode_text(tokenizer([prompt]))[0].float()
                feats.append(f / f.norm())
            mean = torch.stack(feats).sum(0) / len(feats)
            rows.append(mean / mean.norm() if normalize else mean)
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------
# spec §7.1: name processing and prompts


def test_clean_name_strips_only_trailing_full_stops():
    assert clean_name('Ball.') == 'ball'
    assert clean_name('st. bernard.') == 'st. bernard'   # inner stops kept
    assert clean_name('.net') == '.net'                   # a leading stop is not trailing
    assert clean_name('car ') == 'car '                   # only stops are stripped
    assert clean_name('Door/Window_Frame') == 'door or window frame'


@pytest.mark.parametrize('template,expected', [
    ('an embroidered {}.', 'This is an embroidered cat.'),
    ('the plastic {}.', 'This is the plastic cat.'),
    ('a toy {}.', 'This is a toy cat.'),
    ('itap of the {}.', 'itap of the cat.'),
    ('There is the {} in the scene.', 'There is the cat in the scene.'),
    ('another {}.', 'another cat.'),     # starts with "an" but not the word "an"
    ('theatre {}.', 'theatre cat.'),     # nor the word "the"
])
def test_this_is_prefix_for_a_an_the(template, expected):
    assert make_prompts('cat', [template]) == [expected]


def test_prefix_counts_over_the_63_templates():
    """Spec §7.1: all but the 2 "There is" and 3 "itap" prompts get "This is "."""
    prompts = make_prompts('owl')
    prefixed = [p for p in prompts if p.startswith('This is ')]
    assert len(prefixed) == 58
    assert make_prompts('owl', ['an embroidered {}.', 'the toy {}.']) == [
        'This is an embroidered owl.', 'This is the toy owl.']
    assert prompts[0] == 'There is an owl in the scene.'


@pytest.mark.parametrize('name,article', [('apple', 'an'), ('Egg', 'an'), ('umbrella', 'an'),
                                          ('xylophone', 'a'), ('X-ray', 'a'), ('cat', 'a'),
                                          ('_oven', 'a')])
def test_article_from_the_raw_first_character(name, article):
    # '_oven': the raw name starts with '_' (spec: the raw name's first character decides)
    prompt = make_prompts(name, ['a photo of {article} {}.'])[0]
    assert prompt == f'This is a photo of {article} {clean_name(name)}.'


# ---------------------------------------------------------------------------------------------
# build_text_embeddings: values against the step-by-step reference


@pytest.mark.parametrize('normalize', [True, False])
@pytest.mark.parametrize('batch_size', [1, 2, 3, 256])
def test_build_matches_step_by_step_reference(normalize, batch_size):
    model = FakeTextTower()
    names, templates = ['apple', 'traffic light', 'sky.'], TEMPLATES[:5]
    ours = build_text_embeddings(model, char_tokenizer, names, templates, normalize=normalize,
                                 batch_size=batch_size)
    expected = reference_rows(FakeTextTower(), char_tokenizer, names, templates, normalize)
    assert ours.shape == (3, 6) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    norms = ours.norm(dim=-1)
    if normalize:
        torch.testing.assert_close(norms, torch.ones(3), rtol=0, atol=1e-6)
    else:  # the mean of unit vectors that differ is shorter than 1
        assert (norms < 0.999).all()
    # batches: ceil(5 / batch_size) calls per class, each of at most batch_size prompts
    per_class = [min(batch_size, 5 - s) for s in range(0, 5, batch_size)]
    assert model.batch_sizes == per_class * 3


def test_build_defaults_normalise_and_batch_256():
    """Defaults: the 63 templates, unit rows, at most 256 prompts per encoder call."""
    model = FakeTextTower()
    out = build_text_embeddings(model, char_tokenizer, ['cat', 'dog'])
    expected = reference_rows(FakeTextTower(), char_tokenizer, ['cat', 'dog'], TEMPLATES, True)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert model.batch_sizes == [63, 63]
    many = [f'{{}} number {i}.' for i in range(513)]
    model = FakeTextTower()
    build_text_embeddings(model, char_tokenizer, ['cat'], many)
    assert model.batch_sizes == [256, 256, 1]


def test_build_casts_half_precision_towers_to_float32():
    model = FakeTextTower(dtype=torch.bfloat16)
    out = build_text_embeddings(model, char_tokenizer, ['cat', 'dog'], TEMPLATES[:4])
    assert out.dtype == torch.float32
    expected = reference_rows(FakeTextTower(dtype=torch.bfloat16), char_tokenizer, ['cat', 'dog'],
                              TEMPLATES[:4], True)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_build_keeps_no_graph_and_returns_cpu():
    model = FakeTextTower()
    out = build_text_embeddings(model, char_tokenizer, ['cat', 'dog'], TEMPLATES[:3])
    assert not out.requires_grad and out.grad_fn is None and out.device.type == 'cpu'


def test_build_sends_tokens_to_the_device():
    model = FakeTextTower()
    out = build_text_embeddings(model, char_tokenizer, ['cat', 'dog'], TEMPLATES[:3],
                                device='meta')
    assert {d.type for d in model.token_devices} == {'meta'}
    assert out.device.type == 'cpu'


class RecordingBar:
    """Stands in for ``mmengine.utils.ProgressBar``."""
    made: List['RecordingBar'] = []

    def __init__(self, task_num: int = 0, *args, **kwargs):
        self.task_num, self.updates = task_num, 0
        RecordingBar.made.append(self)

    def update(self, *args, **kwargs):
        self.updates += 1


@pytest.fixture
def recording_bar(monkeypatch):
    import mmengine.utils
    RecordingBar.made = []
    monkeypatch.setattr(mmengine.utils, 'ProgressBar', RecordingBar)
    return RecordingBar


def test_build_progress_bar_counts_classes(recording_bar):
    build_text_embeddings(FakeTextTower(), char_tokenizer, ['a', 'b', 'c'], TEMPLATES[:2],
                          progress=True)
    assert [(b.task_num, b.updates) for b in recording_bar.made] == [(3, 3)]
    build_text_embeddings(FakeTextTower(), char_tokenizer, ['a', 'b', 'c'], TEMPLATES[:2])
    assert len(recording_bar.made) == 1  # no bar by default


def test_build_equals_open_clip_classifier_on_a_tiny_tower():
    """Independent reference: open_clip's ``build_zero_shot_classifier`` (normalised rows)."""
    from open_clip import build_zero_shot_classifier

    from densevlm_mm.models.clip_factory import create_clip
    torch.manual_seed(1)
    model, tokenizer = create_clip('densevlm-tiny-vit')
    model.eval()
    names, templates = ['orange', 'door/window', 'the_sky.'], TEMPLATES[40:46]

    def prompt(name, template):
        return make_prompts(name, [template])[0]

    ours = build_text_embeddings(model, tokenizer, names, templates, batch_size=4)
    with torch.no_grad():
        theirs = build_zero_shot_classifier(
            model, tokenizer, names, [functools.partial(prompt, template=t) for t in templates],
            num_classes_per_batch=None).t().float()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# the file format


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _vocab():
    return Vocabulary(['cat', 'dog', 'grass'], [True, True, False])


def _te(**kw):
    args = dict(embeddings=_rand(3, 4).double(),
                class_names=['cat', 'dog', 'grass'], is_thing=torch.tensor([1, 1, 0]),
                model_name='ViT-B-16')
    args.update(kw)
    return TextEmbeddings(**args)


def test_save_writes_every_documented_field(tmp_path):
    te = _te(normalized=False, templates=['a {}.', 'the {}.'])
    path = str(tmp_path / 'e.pt')
    te.save(path)
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {'embeddings', 'class_names', 'is_thing', 'model_name', 'embed_dim',
                        'normalized', 'templates'}
    assert obj['embeddings'].dtype == torch.float32 and obj['embeddings'].shape == (3, 4)
    torch.testing.assert_close(obj['embeddings'], te.embeddings.float())
    assert obj['class_names'] == ['cat', 'dog', 'grass']
    assert obj['is_thing'].dtype == torch.bool and obj['is_thing'].tolist() == [True, True, False]
    assert obj['model_name'] == 'ViT-B-16'
    assert obj['embed_dim'] == 4 and type(obj['embed_dim']) is int
    assert obj['normalized'] is False
    assert obj['templates'] == ['a {}.', 'the {}.']
    back = load_text_embeddings(path)
    assert back.normalized is False and back.templates == ['a {}.', 'the {}.']
    assert back.model_name == 'ViT-B-16' and back.is_thing.tolist() == [True, True, False]
    _te(normalized=1).save(path)   # stored as a real bool
    assert torch.load(path, weights_only=True)['normalized'] is True
    _te().save(path)               # defaults: normalised, the 63 templates
    obj = torch.load(path, weights_only=True)
    assert obj['normalized'] is True and obj['templates'] == TEMPLATES


def test_background_row_round_trips_and_is_checked(tmp_path):
    """``background`` is written only when given, read back as float32 ``[D]``; a row of
    another size is refused; files without it read ``None``."""
    path = str(tmp_path / 'bg.pt')
    row = torch.tensor([1., 2., 3., 4.], dtype=torch.float64)
    _te(background=row).save(path)
    obj = torch.load(path, weights_only=True)
    assert obj['background'].dtype == torch.float32 and obj['background'].shape == (4, )
    back = load_text_embeddings(path)
    torch.testing.assert_close(back.background, row.float(), rtol=0, atol=0)
    assert back.class_names == ['cat', 'dog', 'grass']  # not a class
    _te().save(path)
    assert 'background' not in torch.load(path, weights_only=True)
    assert load_text_embeddings(path).background is None
    obj = dict(torch.load(path, weights_only=True), background=torch.ones(5))
    torch.save(obj, path)
    with pytest.raises(ValueError, match=r'bg\.pt.*background row has 5 values but the class rows '
                       r'4; regenerate'):
        load_text_embeddings(path)


def test_minimal_file_gets_documented_defaults(tmp_path):
    """A dict with only the three required keys: normalised, model unknown, the 63 templates."""
    path = str(tmp_path / 'min.pt')
    torch.save(dict(embeddings=_rand(3, 4), class_names=['cat', 'dog', 'grass'],
                    is_thing=[True, True, False]), path)
    te = load_text_embeddings(path, vocabulary=_vocab(), expected_model='ViT-B-16')
    assert te.normalized is True and te.model_name == 'unknown' and te.templates == TEMPLATES
    assert te.is_thing.dtype == torch.bool and te.embed_dim == 4 and len(te) == 3
    # an unknown model is accepted whichever model name is checked
    assert load_text_embeddings(path, model_name='EVA02-B-16').model_name == 'unknown'


def test_normalized_false_round_trips(tmp_path):
    path = str(tmp_path / 'raw.pt')
    torch.save(dict(embeddings=_rand(3, 4), class_names=['cat', 'dog', 'grass'],
                    is_thing=[True, True, False], normalized=False), path)
    assert load_text_embeddings(path).normalized is False


def test_loads_a_file_written_on_a_gpu(tmp_path, monkeypatch):
    """Tensors recorded on ``cuda:0`` are read onto the CPU (also on machines without CUDA)."""
    path = str(tmp_path / 'gpu.pt')
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, 'location_tag', lambda storage: 'cuda:0')
        _te().save(path)
    te = load_text_embeddings(path)
    assert te.embeddings.device.type == 'cpu' and te.is_thing.device.type == 'cpu'


class NotATensor:
    pass


def test_unsafe_pickles_are_refused_even_if_the_environment_allows_them(tmp_path, monkeypatch):
    path = str(tmp_path / 'pickle.pt')
    obj = _te()
    torch.save(dict(embeddings=obj.embeddings.float(), class_names=obj.class_names,
                    is_thing=obj.is_thing.bool(), extra=NotATensor()), path)
    with pytest.raises(ValueError, match='weights_only=True'):
        load_text_embeddings(path)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(ValueError, match='weights_only=True'):
        load_text_embeddings(path)


def test_a_list_is_not_an_embedding_file(tmp_path):
    path = str(tmp_path / 'list.pt')
    torch.save(['embeddings', 'class_names', 'is_thing'], path)
    with pytest.raises(ValueError, match='not a text embedding file'):
        load_text_embeddings(path)


@pytest.mark.parametrize('shape', [(2, 4), (4, 4), (3,), (3, 4, 1)])
def test_rows_must_be_one_per_class(tmp_path, shape):
    path = str(tmp_path / 'bad.pt')
    torch.save(dict(embeddings=_rand(*shape), class_names=['cat', 'dog', 'grass'],
                    is_thing=[True, True, False]), path)
    with pytest.raises(ValueError, match='one row per class'):
        load_text_embeddings(path)


# ---------------------------------------------------------------------------------------------
# reference .npy files


def _unit_rows(c: int = 3, d: int = 4) -> np.ndarray:
    rows = np.random.default_rng(0).normal(size=(c, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_npy_unit_rows_are_normalised_and_take_the_vocabulary(tmp_path):
    path = str(tmp_path / 'ref.npy')
    np.save(path, _unit_rows())
    vocab = _vocab()
    te = load_text_embeddings(path, vocabulary=vocab, embed_dim=4, num_classes=3,
                              class_names=['cat', 'dog', 'grass'], expected_model='EVA02-B-16')
    assert te.normalized is True
    assert te.class_names == ['cat', 'dog', 'grass']
    assert te.is_thing.tolist() == [True, True, False]
    assert te.is_thing is not vocab.is_thing            # a copy: the vocabulary stays untouched
    assert 'npy' in te.model_name                        # provenance shows in error messages
    assert te.embeddings.dtype == torch.float32
    torch.testing.assert_close(te.embeddings, torch.from_numpy(_unit_rows()))
    # the file records no model: accepted under any model name
    assert load_text_embeddings(path, vocabulary=vocab, model_name='ViT-L-14').embed_dim == 4


@pytest.mark.parametrize('norm,normalized', [(1.0, True), (1.0009, True), (0.9991, True),
                                             (1.0011, False), (0.9989, False), (0.93, False),
                                             (0.5, False), (2.0, False)])
def test_npy_normalized_tolerance_boundary(tmp_path, norm, normalized):
    """Rows count as unit norm within 1e-3 (the reference 316-class rows, 0.886-0.956, do not)."""
    path = str(tmp_path / 'ref.npy')
    np.save(path, _unit_rows() * np.float32(norm))
    assert load_text_embeddings(path, vocabulary=_vocab()).normalized is normalized


def test_npy_with_one_row_off_unit_is_not_normalised(tmp_path):
    rows = _unit_rows(3, 4)
    rows[1] *= 0.9
    path = str(tmp_path / 'ref.npy')
    np.save(path, rows)
    assert load_text_embeddings(path, vocabulary=_vocab()).normalized is False


@pytest.mark.parametrize('shape', [(3,), (4,), (2, 4), (3, 4, 2)])
def test_npy_with_wrong_shape_is_rejected(tmp_path, shape):
    path = str(tmp_path / 'ref.npy')
    np.save(path, np.ones(shape, dtype=np.float32))
    with pytest.raises(ValueError):
        load_text_embeddings(path, vocabulary=_vocab())


def test_npy_of_1d_array_names_its_shape(tmp_path):
    path = str(tmp_path / 'ref.npy')
    np.save(path, np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r'shape \(3,\) do not have one row per class'):
        load_text_embeddings(path, vocabulary=_vocab())


# ---------------------------------------------------------------------------------------------
# checks against the vocabulary, dataset and model


@pytest.fixture
def saved(tmp_path):
    path = str(tmp_path / 'e.pt')
    _te().save(path)
    return path


def test_vocabulary_names_must_match_in_order(saved):
    assert load_text_embeddings(saved, vocabulary=_vocab()).class_names == ['cat', 'dog', 'grass']
    with pytest.raises(ValueError, match=r"class 1 is 'dog' in the file but 'wolf' in the "
                                         r'vocabulary'):
        load_text_embeddings(saved, vocabulary=Vocabulary(['cat', 'wolf', 'grass'],
                                                          [True, True, False]))
    with pytest.raises(ValueError, match=r"class 2 is 'grass' in the file but 'sky'"):
        load_text_embeddings(saved, vocabulary=Vocabulary(['cat', 'dog', 'sky'],
                                                          [True, True, False]))
    with pytest.raises(ValueError, match=r"class 0 is 'cat' in the file but 'dog'"):
        load_text_embeddings(saved, vocabulary=Vocabulary(['dog', 'cat', 'grass'],
                                                          [True, True, False]))


@pytest.mark.parametrize('suffix', ['.pth', '.NPY', '.npy.pt', '', '.XX.npyXX'])
def test_torch_files_are_checked_whatever_their_suffix(tmp_path, suffix):
    """Only names ending in ``.npy`` are bare arrays; any other file is a torch file whose names
    and split are checked against the vocabulary."""
    path = str(tmp_path / f'e{suffix}')
    _te().save(path)
    assert load_text_embeddings(path, vocabulary=_vocab()).model_name == 'ViT-B-16'
    with pytest.raises(ValueError, match="class 1 is 'dog' in the file but 'wolf'"):
        load_text_embeddings(path, vocabulary=Vocabulary(['cat', 'wolf', 'grass'],
                                                         [True, True, False]))
    with pytest.raises(ValueError, match='thing/stuff flags differ'):
        load_text_embeddings(path, vocabulary=Vocabulary(['cat', 'dog', 'grass'],
                                                         [True, False, False]))


def test_vocabulary_split_must_match(saved):
    with pytest.raises(ValueError, match='thing/stuff flags differ'):
        load_text_embeddings(saved, vocabulary=Vocabulary(['cat', 'dog', 'grass'],
                                                          [True, False, False]))


def test_vocabulary_size_must_match(saved):
    with pytest.raises(ValueError, match='3 classes but the vocabulary has 4'):
        load_text_embeddings(saved, vocabulary=Vocabulary(['cat', 'dog', 'grass', 'sky'],
                                                          [True, True, False, False]))


def test_embed_dim_and_num_classes_boundaries(saved):
    assert load_text_embeddings(saved, embed_dim=4, num_classes=3).embed_dim == 4
    for dim in (3, 5):
        with pytest.raises(ValueError, match=f'4-d embeddings but the model embeds into {dim}'):
            load_text_embeddings(saved, embed_dim=dim)
    for n in (2, 4):
        with pytest.raises(ValueError, match=f'3 classes but {n} are expected'):
            load_text_embeddings(saved, num_classes=n)


def test_dataset_class_names(saved):
    assert len(load_text_embeddings(saved, class_names=('cat', 'dog', 'grass'))) == 3
    with pytest.raises(ValueError, match='the dataset has 2'):
        load_text_embeddings(saved, class_names=['cat', 'dog'])
    with pytest.raises(ValueError, match='the dataset has 4'):
        load_text_embeddings(saved, class_names=['cat', 'dog', 'grass', 'sky'])
    with pytest.raises(ValueError, match=r"class 2 is 'grass' in the file but 'sky' in the "
                                         r'dataset'):
        load_text_embeddings(saved, class_names=['cat', 'dog', 'sky'])


def test_expected_model(saved):
    assert load_text_embeddings(saved, expected_model='ViT-B-16').model_name == 'ViT-B-16'
    assert load_text_embeddings(saved, model_name='ViT-B-16').model_name == 'ViT-B-16'
    assert load_text_embeddings(saved, expected_model='ViT-B-16',
                                model_name='ViT-B-16').model_name == 'ViT-B-16'
    with pytest.raises(ValueError, match="text tower of 'ViT-B-16', but it is used with "
                                         "'EVA02-B-16'"):
        load_text_embeddings(saved, expected_model='EVA02-B-16')
    with pytest.raises(ValueError, match="text tower of 'ViT-B-16', but it is used with "
                                         "'EVA02-B-16'"):
        load_text_embeddings(saved, model_name='EVA02-B-16')
    with pytest.raises(ValueError, match='differ'):
        load_text_embeddings(saved, expected_model='ViT-B-16', model_name='EVA02-B-16')


# ---------------------------------------------------------------------------------------------
# generate_text_embedding_file


@pytest.fixture
def fake_create_clip(monkeypatch):
    """``create_clip`` replaced by the fake tower; records its calls."""
    import densevlm_mm.models.clip_factory as factory
    calls = []

    def create(model_name, pretrained=None, model_cfg=None, precision='fp32', device='cpu'):
        model = FakeTextTower()
        calls.append(dict(model_name=model_name, pretrained=pretrained, device=device,
                          model=model))
        return model, char_tokenizer

    monkeypatch.setattr(factory, 'create_clip', create)
    return calls


def test_generate_defaults(tmp_path, fake_create_clip, recording_bar):
    """Defaults: the 63 templates, unit rows, batches of 256, a progress bar, the CPU; the
    classes, then the word "background" the same way (stored apart, as ``background``)."""
    out = str(tmp_path / 'new' / 'dir' / 'e.pt')  # missing folders are created
    te = generate_text_embedding_file('fake-model', 'none', _vocab(), out)
    assert [(c['pretrained'], c['device']) for c in fake_create_clip] == [(None, 'cpu')]
    model = fake_create_clip[0]['model']
    assert model.batch_sizes == [63, 63, 63, 63]
    assert [(b.task_num, b.updates) for b in recording_bar.made] == [(4, 4)]
    expected = reference_rows(FakeTextTower(), char_tokenizer, _vocab().names, TEMPLATES, True)
    bg = reference_rows(FakeTextTower(), char_tokenizer, ['background'], TEMPLATES, True)[0]
    back = load_text_embeddings(out, vocabulary=_vocab(), embed_dim=6,
                                expected_model='fake-model')
    assert 'background' not in back.class_names and len(back) == 3
    for res in (te, back):
        torch.testing.assert_close(res.embeddings, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(res.background, bg, rtol=0, atol=1e-6)
        assert res.normalized is True and res.templates == TEMPLATES
        assert res.model_name == 'fake-model' and res.is_thing.tolist() == [True, True, False]
    te = generate_text_embedding_file('fake-model', None, _vocab(), out)  # the folder exists
    assert osp.isfile(out)


def test_generate_default_batch_is_256_prompts(tmp_path, fake_create_clip):
    templates = [f'{{}} number {i}.' for i in range(257)]
    generate_text_embedding_file('fake-model', 'none', _vocab(), str(tmp_path / 'e.pt'),
                                 templates=templates, progress=False)
    assert fake_create_clip[0]['model'].batch_sizes == [256, 1] * 4  # 3 classes + background


def test_generate_passes_its_arguments(tmp_path, fake_create_clip, recording_bar):
    out = str(tmp_path / 'e.pt')
    templates = ['a {}.', 'the {} here.', '{} there.']
    te = generate_text_embedding_file('fake-model', 'none', _vocab(), out, templates=templates,
                                      normalize=False, device='meta', batch_size=2,
                                      progress=False)
    assert fake_create_clip[0]['device'] == 'meta'
    model = fake_create_clip[0]['model']
    assert {d.type for d in model.token_devices} == {'meta'}
    assert model.batch_sizes == [2, 1] * 4
    assert recording_bar.made == []
    back = load_text_embeddings(out)
    for res in (te, back):
        assert res.normalized is False and res.templates == templates
    te = generate_text_embedding_file('fake-model', 'none', _vocab(), out, templates=templates,
                                      normalize=False, progress=False)
    expected = reference_rows(FakeTextTower(), char_tokenizer, _vocab().names, templates, False)
    torch.testing.assert_close(load_text_embeddings(out).embeddings, expected, rtol=0, atol=1e-6)
    assert (expected.norm(dim=-1) < 0.999).all()
    # the background row is made the same way: not normalised either
    bg = reference_rows(FakeTextTower(), char_tokenizer, ['background'], templates, False)[0]
    torch.testing.assert_close(load_text_embeddings(out).background, bg, rtol=0, atol=1e-6)
    assert bg.norm() < 0.999


def test_generate_reads_a_templates_file(tmp_path, fake_create_clip):
    lines = ['a photo of a {}.', '# a comment without a slot', '', 'a {} next to a letter X',
             'a {} with trailing spaces.  ', 'the last {}']   # no newline after the last line
    tfile = tmp_path / 't.txt'
    tfile.write_text('\n'.join(lines))
    out = str(tmp_path / 'e.pt')
    te = generate_text_embedding_file('fake-model', 'none', _vocab(), out, templates=str(tfile),
                                      progress=False)
    kept = ['a photo of a {}.', 'a {} next to a letter X', 'a {} with trailing spaces.  ',
            'the last {}']
    assert te.templates == kept and load_text_embeddings(out).templates == kept
    expected = reference_rows(FakeTextTower(), char_tokenizer, _vocab().names, kept, True)
    torch.testing.assert_close(te.embeddings, expected, rtol=0, atol=1e-6)


def test_generate_templates_file_errors(tmp_path, fake_create_clip):
    out = str(tmp_path / 'e.pt')
    with pytest.raises(FileNotFoundError, match='templates file not found'):
        generate_text_embedding_file('fake-model', 'none', _vocab(), out,
                                     templates=str(tmp_path / 'missing.txt'))
    tfile = tmp_path / 't.txt'
    tfile.write_text('no slot here\nnor here\n')
    with pytest.raises(ValueError, match='no line containing'):
        generate_text_embedding_file('fake-model', 'none', _vocab(), out, templates=str(tfile))
    tfile.write_text('one {} slot\n')
    te = generate_text_embedding_file('fake-model', 'none', _vocab(), out, templates=str(tfile),
                                      progress=False)
    assert te.templates == ['one {} slot']
    assert len(fake_create_clip) == 1   # no model is built for a bad templates file


@pytest.mark.parametrize('checkpoint', ['none', 'None', '', None])
def test_generate_random_init_spellings(tmp_path, fake_create_clip, checkpoint):
    """``none``, ``None``, ``''`` and ``None`` ask for random init: no checkpoint is passed on."""
    generate_text_embedding_file('fake-model', checkpoint, _vocab(), str(tmp_path / 'e.pt'),
                                 templates=['a {}.'], progress=False)
    assert fake_create_clip[0]['pretrained'] is None


def test_generate_with_a_checkpoint(tmp_path):
    """Real tiny tower: the rows are those of the checkpoint's weights, not of a random init."""
    from densevlm_mm.models.clip_factory import create_clip
    torch.manual_seed(0)
    model, tokenizer = create_clip('densevlm-tiny-vit')
    model.eval()
    ckpt = str(tmp_path / 'tiny.pt')
    torch.save(model.state_dict(), ckpt)
    names, templates = ['cat', 'grass'], ['a photo of a {}.', 'itap of my {}.']
    vocab = Vocabulary(names, [True, False])
    expected = reference_rows(model, tokenizer, names, templates, True)
    out = str(tmp_path / 'e.pt')
    for checkpoint, same in ((ckpt, True), ('none', False)):
        torch.manual_seed(5)
        te = generate_text_embedding_file('densevlm-tiny-vit', checkpoint, vocab, out,
                                          templates=templates, progress=False)
        assert te.embeddings.shape == expected.shape
        assert torch.allclose(te.embeddings, expected, rtol=0, atol=1e-5) is same
