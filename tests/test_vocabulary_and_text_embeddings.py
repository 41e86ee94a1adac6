"""Vocabularies (thing/stuff split required), prompt construction, the embedding file and its
checks, and tools/text_embeddings.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from densevlm_mm.text_embeddings import (TEMPLATES, TextEmbeddings, load_text_embeddings,
                                         make_prompts)
from densevlm_mm.vocabulary import bundled_vocabularies, load_vocabulary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('name,size,things', [('densevlm_316', 316, 204),
                                               ('densevlm_273', 273, 160),
                                               ('coco_panoptic_133', 133, 80),
                                               ('coco_stuff_171', 171, 80),
                                               ('ade20k_panoptic_150', 150, 100)])
def test_bundled_vocabularies(name, size, things):
    vocab = load_vocabulary(name)
    assert len(vocab) == size and vocab.num_things == things
    assert name in bundled_vocabularies()


def test_316_duplicates_and_thing_block():
    vocab = load_vocabulary('densevlm_316')
    assert vocab.is_thing[:204].all() and not vocab.is_thing[204:].any()
    assert vocab.names[123] == vocab.names[215] == 'cupboard'
    assert vocab.names[203] == 'house'  # the class the reference's off-by-one treats as stuff


def test_vocabulary_file_formats_and_errors(tmp_path):
    txt = tmp_path / 'v.txt'
    txt.write_text('thing\tcat\nstuff\tgrass, lawn\n\n')
    vocab = load_vocabulary(str(txt))
    assert vocab.names == ['cat', 'grass, lawn'] and vocab.is_thing.tolist() == [True, False]
    js = tmp_path / 'v.json'
    js.write_text(json.dumps({'names': ['a', 'b'], 'is_thing': [1, 0]}))
    assert load_vocabulary(str(js)).num_things == 1
    names = tmp_path / 'names.json'  # a plain list of names: object classes (detection)
    names.write_text(json.dumps(['cat', 'dog']))
    assert load_vocabulary(str(names)).is_thing.tolist() == [True, True]
    bad = tmp_path / 'mixed.json'
    bad.write_text(json.dumps(['cat', {'name': 'dog'}]))
    with pytest.raises(ValueError, match='thing/stuff split'):
        load_vocabulary(str(bad))
    nosplit = tmp_path / 'n.txt'
    nosplit.write_text('cat\n')
    with pytest.raises(ValueError, match='thing/stuff split'):
        load_vocabulary(str(nosplit))
    with pytest.raises(FileNotFoundError, match='bundled'):
        load_vocabulary('no_such_vocab')


def test_prompts_follow_the_reference_rule():
    prompts = make_prompts('Traffic_Light')
    assert len(TEMPLATES) == 63 and len(prompts) == 63
    assert prompts[0] == 'There is a traffic light in the scene.'
    assert prompts[2] == 'This is a photo of a traffic light in the scene.'
    assert prompts[5] == 'itap of a traffic light.'
    assert make_prompts('apple')[8] == 'This is a photo of an apple.'
    assert make_prompts('door/window')[10] == 'This is a photo of the door or window.'


def test_embedding_file_checks(tmp_path):
    vocab = load_vocabulary('coco_panoptic_133')
    te = TextEmbeddings(torch.randn(133, 8), list(vocab.names), vocab.is_thing.clone(), 'X')
    path = str(tmp_path / 'e.pt')
    te.save(path)
    back = load_text_embeddings(path, vocabulary='coco_panoptic_133', embed_dim=8,
                                num_classes=133, class_names=vocab.names, model_name='X')
    assert torch.equal(back.embeddings, te.embeddings) and back.embed_dim == 8
    with pytest.raises(ValueError, match='8-d embeddings but the model embeds into 16'):
        load_text_embeddings(path, embed_dim=16)
    with pytest.raises(ValueError, match='133 classes but 150'):
        load_text_embeddings(path, num_classes=150)
    with pytest.raises(ValueError, match='vocabulary has 150'):
        load_text_embeddings(path, vocabulary='ade20k_panoptic_150')
    swapped = list(vocab.names)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(ValueError, match='order'):
        load_text_embeddings(path, class_names=swapped)
    with pytest.raises(ValueError, match="made with the text tower of 'X', but it is used with 'Y'"):
        load_text_embeddings(path, model_name='Y')
    np.save(tmp_path / 'r.npy', te.embeddings.numpy())
    with pytest.raises(ValueError, match='vocabulary'):
        load_text_embeddings(str(tmp_path / 'r.npy'))
    npy = load_text_embeddings(str(tmp_path / 'r.npy'), vocabulary='coco_panoptic_133')
    assert npy.class_names == vocab.names and not npy.normalized
    with pytest.raises(FileNotFoundError, match='tools/text_embeddings.py'):
        load_text_embeddings(str(tmp_path / 'missing.pt'))
    torch.save({'weights': torch.zeros(2)}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match='not a text embedding file'):
        load_text_embeddings(str(tmp_path / 'other.pt'))


def test_text_embeddings_tool(tmp_path):
    from densevlm_mm.models.clip_factory import create_clip
    torch.manual_seed(0)
    model, tokenizer = create_clip('densevlm-tiny-vit')
    ckpt = str(tmp_path / 'tiny.pt')
    torch.save(model.state_dict(), ckpt)
    vocab = tmp_path / 'v.txt'
    vocab.write_text('thing\tcat\nstuff\tgrass\n')
    templates = tmp_path / 't.txt'
    templates.write_text('a photo of a {}.\na drawing of a {}.\n')
    out = str(tmp_path / 'e.pt')
    res = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'text_embeddings.py'),
                          'densevlm-tiny-vit', ckpt, str(vocab), out, '--templates',
                          str(templates)], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert res.returncode == 0, res.stderr[-2000:]
    te = load_text_embeddings(out, vocabulary=str(vocab), embed_dim=32,
                              model_name='densevlm-tiny-vit')
    assert te.templates == ['a photo of a {}.', 'a drawing of a {}.']
    # the rows are the normalised mean of the normalised prompt embeddings
    with torch.no_grad():
        feats = model.encode_text(tokenizer(['This is a photo of a cat.',
                                             'This is a drawing of a cat.'])).float()
    expected = torch.nn.functional.normalize(
        torch.nn.functional.normalize(feats, dim=-1).mean(0), dim=0)
    assert torch.allclose(te.embeddings[0], expected, atol=1e-5)
    assert torch.allclose(te.embeddings.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_plain_name_list_loads_as_object_classes():
    """The detection vocabularies are plain name lists: every class is a thing (F-ViT's files)."""
    from densevlm_mm.vocabulary import load_vocabulary
    vocab = load_vocabulary('ovcoco_65_all')
    assert len(vocab.names) == 65 and vocab.names[0] == 'person'
    assert bool(vocab.is_thing.all())
    lvis = load_vocabulary('ovlvis_1203_all')
    assert len(lvis.names) == 1203 and bool(lvis.is_thing.all())


def test_build_text_embeddings_equals_open_clip_zero_shot_classifier():
    """With normalised rows our prompt ensemble is open_clip's ``build_zero_shot_classifier`` fed
    the same prompts (the twin exists for the reference's un-normalised rows)."""
    import functools

    import torch
    from open_clip import build_zero_shot_classifier

    from densevlm_mm.models.clip_factory import create_clip
    from densevlm_mm.text_embeddings import TEMPLATES, build_text_embeddings, make_prompts
    torch.manual_seed(0)
    model, tokenizer = create_clip('densevlm-tiny-vit')
    model.eval()
    names, templates = ['apple', 'traffic light', 'sky'], TEMPLATES[:7]

    def prompt(name, template):
        return make_prompts(name, [template])[0]

    ours = build_text_embeddings(model, tokenizer, names, templates, normalize=True)
    with torch.no_grad():
        theirs = build_zero_shot_classifier(
            model, tokenizer, names, [functools.partial(prompt, template=t) for t in templates],
            num_classes_per_batch=None).t()
    torch.testing.assert_close(ours, theirs.float(), rtol=0, atol=1e-6)
    raw = build_text_embeddings(model, tokenizer, names, templates, normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(3))  # the reference's rows differ
