"""Vocabularies by value: the bundled lists against the spec (§7.2) and their own JSON read here,
every file format at its edges, and the errors a user gets for bad files (which class, line or
entry they name)."""
import json
import os
import os.path as osp
import re

import pytest
import torch

from densevlm_mm.vocabulary import (BUNDLED_DIR, Vocabulary, check_class_names,
                                    load_vocabulary, vocabulary_from_lists)

# the project's shared reference folder sits beside the checkout (../shared)
REFERENCE_VOCAB = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'shared',
                           'reference', 'vocab')


def _raw(name: str) -> list:
    with open(osp.join(BUNDLED_DIR, f'{name}.json')) as f:
        return json.load(f)


# ----------------------------------------------------------------------------- bundled data
# (name, classes, things) from the spec, §7.2 / Table 3.
SEGMENTATION_VOCABS = [('densevlm_316', 316, 204), ('densevlm_273', 273, 160),
                       ('coco_panoptic_133', 133, 80), ('coco_stuff_171', 171, 80),
                       ('ade20k_panoptic_150', 150, 100), ('densevlm_899_unused', 899, 203)]


@pytest.mark.parametrize('name,size,things', SEGMENTATION_VOCABS)
def test_bundled_lists_match_their_json_rows(name, size, things):
    """Names and flags in row order, read here straight from the JSON (missing isthing = stuff)."""
    raw = _raw(name)
    vocab = load_vocabulary(name)
    assert len(raw) == size == len(vocab)
    assert vocab.names == [e['name'] for e in raw]
    assert vocab.is_thing.dtype == torch.bool and vocab.is_thing.shape == (size,)
    assert vocab.is_thing.tolist() == [bool(e.get('isthing', 0)) for e in raw]
    assert vocab.num_things == things and isinstance(vocab.num_things, int)


@pytest.mark.parametrize('name,things', [('densevlm_316', 204), ('densevlm_273', 160),
                                         ('coco_panoptic_133', 80), ('coco_stuff_171', 80),
                                         ('densevlm_899_unused', 203)])
def test_things_come_first(name, things):
    """Spec §7.2: in these lists the things are one block at the start."""
    vocab = load_vocabulary(name)
    assert vocab.is_thing[:things].all() and not vocab.is_thing[things:].any()


def test_316_duplicates_across_the_split_are_accepted():
    """cupboard / fruit / cradle appear once as a thing and once as stuff (spec §7.2)."""
    vocab = load_vocabulary('densevlm_316')
    for thing, stuff, name in [(123, 215, 'cupboard'), (124, 226, 'fruit'), (125, 309, 'cradle')]:
        assert vocab.names[thing] == vocab.names[stuff] == name
        assert vocab.is_thing[thing] and not vocab.is_thing[stuff]
    assert vocab.names[0] == 'motorcycle'


def test_ade150_things_interleaved_and_coco133_in_id_order():
    ade = load_vocabulary('ade20k_panoptic_150')
    # interleaved: wall, building, sky, floor, tree (0-4) are stuff, bed (7) is a thing
    assert ade.names[:5] == ['wall', 'building', 'sky', 'floor', 'tree']
    assert not ade.is_thing[:5].any() and ade.is_thing[7]
    flips = int((ade.is_thing[1:] != ade.is_thing[:-1]).sum())
    assert flips > 2  # not a thing block followed by a stuff block
    coco = _raw('coco_panoptic_133')
    assert [e['id'] for e in coco] == sorted(e['id'] for e in coco)
    assert [e['label'] for e in coco] == list(range(133))
    assert load_vocabulary('coco_panoptic_133').names[0] == 'person'


def test_ade847_has_no_split_unless_names_only():
    """ADE-847 has no isthing at all: rejected for DenseVLM, all stuff with require_split=False."""
    with pytest.raises(ValueError, match='isthing'):
        load_vocabulary('ade20k_847')
    vocab = load_vocabulary('ade20k_847', require_split=False)
    raw = _raw('ade20k_847')
    assert len(vocab) == 847 == len(raw)
    assert [e['trainId'] for e in raw] == list(range(847))
    assert vocab.names == [e['name'] for e in raw] and vocab.num_things == 0


@pytest.mark.parametrize('all_,base,novel,sizes', [
    ('ovcoco_65_all', 'ovcoco_48_base', 'ovcoco_17_novel', (65, 48, 17)),
    ('ovlvis_1203_all', 'ovlvis_866_base', 'ovlvis_337_novel_rare', (1203, 866, 337))])
def test_open_vocabulary_detection_splits(all_, base, novel, sizes):
    """Base and novel partition the full list (spec §8); every detection class is a thing."""
    a, b, n = (load_vocabulary(x) for x in (all_, base, novel))
    assert (len(a), len(b), len(n)) == sizes
    assert set(b.names).isdisjoint(n.names)
    assert set(b.names) | set(n.names) == set(a.names)
    assert a.names == _raw(all_)
    for v in (a, b, n):
        assert v.is_thing.all() and v.num_things == len(v)
    # base and novel keep the order of the full list
    for part in (b, n):
        pos = [a.names.index(x) for x in part.names]
        assert pos == sorted(pos)


def test_ovcoco_classes_are_coco_classes_in_coco_order():
    coco = load_vocabulary('coco_panoptic_133')
    ov = load_vocabulary('ovcoco_65_all')
    pos = [coco.names.index(x) for x in ov.names]
    assert pos == sorted(pos) and max(pos) < 80  # all among the 80 COCO things
    assert {'airplane', 'bus', 'cat', 'dog', 'scissors'} <= set(load_vocabulary('ovcoco_17_novel').names)


@pytest.mark.skipif(not osp.isdir(REFERENCE_VOCAB), reason='reference vocab files not present')
def test_bundled_files_equal_the_reference_files():
    for f in sorted(os.listdir(BUNDLED_DIR)):
        if f.endswith('.json'):
            with open(osp.join(REFERENCE_VOCAB, f)) as ref, open(osp.join(BUNDLED_DIR, f)) as own:
                assert json.load(ref) == json.load(own), f


# ----------------------------------------------------------------------------- Vocabulary
def test_flags_are_stored_as_a_flat_bool_tensor():
    vocab = Vocabulary(['cat', 'grass'], [[1], [0]])
    assert vocab.is_thing.dtype == torch.bool and vocab.is_thing.tolist() == [True, False]
    vocab = Vocabulary(['cat', 'grass', 'sky'], torch.tensor([2, 0, 0]))
    assert vocab.is_thing.dtype == torch.bool and vocab.num_things == 1


def test_vocabulary_from_lists():
    vocab = vocabulary_from_lists(('cat', 'grass'), (True, False))
    assert vocab.names == ['cat', 'grass'] and isinstance(vocab.names, list)
    assert vocab.is_thing.tolist() == [True, False] and vocab.is_thing.dtype == torch.bool
    with pytest.raises(ValueError, match='2 names but 1'):
        vocabulary_from_lists(['cat', 'grass'], [True])


def test_empty_single_and_count_mismatch():
    with pytest.raises(ValueError, match='vocabulary is empty'):
        Vocabulary([], [])
    with pytest.raises(ValueError, match=r'only 1 class'):
        Vocabulary(['cat'], [True])
    Vocabulary(['cat', 'dog'], [True, True])  # two classes: the smallest accepted
    with pytest.raises(ValueError, match='3 names but 2'):
        Vocabulary(['a', 'b', 'c'], [True, False])


@pytest.mark.parametrize('bad', [None, 3, '', '   '])
def test_empty_or_non_string_name_is_a_value_error(bad):
    with pytest.raises(ValueError, match=r'^vocabulary: class 1 has an empty name'):
        check_class_names(['cat', bad], [True, True])


def test_duplicate_names_report_group_and_both_rows():
    with pytest.raises(ValueError,
                       match=r"^vocabulary: thing class 'Cat ' is listed twice \(classes 0 and 2\)"):
        check_class_names(['cat', 'grass', 'Cat '], [True, False, True])
    with pytest.raises(ValueError,
                       match=r"^vocabulary: stuff class 'sky' is listed twice \(classes 1 and 3\)"):
        check_class_names(['cat', 'sky', 'grass', 'sky'], [True, False, False, False])
    with pytest.raises(ValueError, match=r'^my list: stuff class'):
        check_class_names(['sky', 'sky'], [False, False], where='my list')
    check_class_names(['cupboard', 'cupboard'], [True, False])  # once per group is fine


def test_different_words_that_upper_case_alike_are_not_duplicates():
    """German 'Maße' (measures) and 'Masse' (mass) are different words: both upper-case to
    'MASSE', lower-case differently. Case-insensitive duplicate check by lower case."""
    check_class_names(['Maße', 'Masse'], [True, True])
    with pytest.raises(ValueError, match='listed twice'):
        check_class_names(['MASSE', 'masse'], [True, True])


# ----------------------------------------------------------------------------- text files
def test_txt_flag_spellings(tmp_path):
    txt = tmp_path / 'v.txt'
    txt.write_text('thing\ta\nTHING\tb\n1\tc\ntrue\td\nTrue\te\n'
                   'stuff\tf\nStuff\tg\n0\th\nfalse\ti\nFALSE\tj\n')
    vocab = load_vocabulary(str(txt))
    assert vocab.names == list('abcdefghij')
    assert vocab.is_thing.tolist() == [True] * 5 + [False] * 5


def test_txt_blank_lines_anywhere_are_skipped(tmp_path):
    txt = tmp_path / 'v.txt'
    txt.write_text('\nthing\tcat\n\n   \nstuff\tgrass\n\n')
    vocab = load_vocabulary(str(txt))
    assert vocab.names == ['cat', 'grass'] and vocab.is_thing.tolist() == [True, False]


def test_txt_name_is_everything_after_the_first_tab(tmp_path):
    """A trailing tab (spreadsheet export) or trailing spaces are not part of the name; a name
    may contain commas, spaces and end in an upper-case X."""
    txt = tmp_path / 'v.txt'
    txt.write_text('thing\tcat\t\nthing\tiPhone X\nstuff\t grass, lawn  \r\nthing \tfire hydrant')
    vocab = load_vocabulary(str(txt))
    assert vocab.names == ['cat', 'iPhone X', 'grass, lawn', 'fire hydrant']
    assert vocab.is_thing.tolist() == [True, True, False, True]


def test_txt_errors_name_file_and_line(tmp_path):
    txt = tmp_path / 'v.txt'
    txt.write_text('thing\tcat\ncat\n')
    with pytest.raises(ValueError, match=re.escape(f"{txt}:2: 'cat' has no thing/stuff split")):
        load_vocabulary(str(txt))
    txt.write_text('thing\tcat\n\nmaybe\tdog\n')
    with pytest.raises(ValueError, match=re.escape(f"{txt}:3: thing/stuff flag 'maybe'")):
        load_vocabulary(str(txt))
    txt.write_text('thing\tcat\nstuff\tgrass\nthing\t\n')
    with pytest.raises(ValueError, match='class 2 has an empty name'):
        load_vocabulary(str(txt))
    txt.write_text('thing\tcat\nstuff\tgrass\nthing\t   \n')
    with pytest.raises(ValueError, match='class 2 has an empty name'):
        load_vocabulary(str(txt))


# ----------------------------------------------------------------------------- JSON files
def test_json_entry_lists(tmp_path):
    js = tmp_path / 'v.json'
    # COCO-Stuff style: stuff entries without isthing are stuff; other keys are ignored
    js.write_text(json.dumps([{'name': 'cat', 'isthing': 1, 'id': 7}, {'name': 'grass'},
                              {'name': 'car', 'isthing': True}, {'name': 'sky', 'isthing': 0},
                              {'name': 'bus', 'isthing': 'thing'}]))
    vocab = load_vocabulary(str(js))
    assert vocab.names == ['cat', 'grass', 'car', 'sky', 'bus']
    assert vocab.is_thing.tolist() == [True, False, True, False, True]


def test_json_without_any_isthing(tmp_path):
    js = tmp_path / 'v.json'
    js.write_text(json.dumps([{'name': 'cat'}, {'name': 'grass'}]))
    with pytest.raises(ValueError, match='no "isthing" key in any entry'):
        load_vocabulary(str(js))  # the default requires the split
    with pytest.raises(ValueError, match='isthing'):
        load_vocabulary(str(js), require_split=True)
    vocab = load_vocabulary(str(js), require_split=False)
    assert vocab.names == ['cat', 'grass'] and vocab.is_thing.tolist() == [False, False]


def test_json_entry_errors(tmp_path):
    js = tmp_path / 'v.json'
    js.write_text(json.dumps([{'name': 'cat', 'isthing': 1}, {'isthing': 0}]))
    with pytest.raises(ValueError, match='entry 1 .* has no thing/stuff split'):
        load_vocabulary(str(js))
    js.write_text(json.dumps([{'name': 'cat', 'isthing': 1}, 'grass']))
    with pytest.raises(ValueError, match='entry 1 .* has no thing/stuff split'):
        load_vocabulary(str(js))
    js.write_text(json.dumps([{'name': 'cat', 'isthing': 1}, {'name': 'sky', 'isthing': 'no'}]))
    with pytest.raises(ValueError, match=re.escape(f"{js} entry 1: thing/stuff flag 'no'")):
        load_vocabulary(str(js))


def test_json_names_and_flags_dict(tmp_path):
    js = tmp_path / 'v.json'
    js.write_text(json.dumps({'names': ['cat', 'grass', 'sky'], 'is_thing': ['thing', 0, False]}))
    vocab = load_vocabulary(str(js))
    assert vocab.names == ['cat', 'grass', 'sky'] and vocab.is_thing.tolist() == [True, False, False]
    js.write_text(json.dumps({'names': ['cat', 'grass'], 'is_thing': ['thing', 'maybe']}))
    with pytest.raises(ValueError, match=re.escape(f"{js}: thing/stuff flag 'maybe'")):
        load_vocabulary(str(js))
    js.write_text(json.dumps({'names': ['cat', 'grass']}))
    with pytest.raises(ValueError, match='no "is_thing" list'):
        load_vocabulary(str(js))
    js.write_text(json.dumps({'classes': ['cat', 'grass']}))
    with pytest.raises(ValueError, match='expected a JSON list'):
        load_vocabulary(str(js))


def test_plain_name_list_with_a_class_called_names(tmp_path):
    js = tmp_path / 'v.json'
    js.write_text(json.dumps(['names', 'cat']))
    vocab = load_vocabulary(str(js))
    assert vocab.names == ['names', 'cat'] and vocab.is_thing.tolist() == [True, True]


def test_a_vocabulary_passes_through_and_missing_names_are_reported(tmp_path):
    vocab = Vocabulary(['cat', 'grass'], [True, False])
    assert load_vocabulary(vocab) is vocab
    with pytest.raises(FileNotFoundError, match='coco_panoptic_133'):
        load_vocabulary(str(tmp_path / 'missing.json'))
