"""Every config, tool and file path named in the Markdown docs exists (the rule is in
``docs_refs``: backticked or code-block tokens starting with configs/, tools/, densevlm_mm/,
tests/, docs/, requirements/; placeholders skipped, braces expanded, globs must match)."""
from pathlib import Path

import docs_refs as refs



def test_every_path_named_in_the_docs_exists():
    missing, checked = [], 0
    for path in refs.markdown_files():
        for code in refs.parse(path).code:
            for token in refs.path_tokens(code):
                checked += 1
                reason = refs.check_path(token)
                if reason:
                    missing.append(f'{refs.rel(code.file)}:{code.line}: `{token}`: {reason}')
    assert checked > 100
    assert not missing, 'paths named in the docs that do not exist:\n' + '\n'.join(missing)


def test_reader_written_files_do_not_exist():
    """The allowance is only for files the reader writes; one that exists needs no allowance."""
    for token, why in refs.READER_FILES.items():
        assert not (refs.REPO / token).exists(), f'{token} exists: drop it from READER_FILES'
        assert why


def code(text: str, block: bool = False) -> refs.CodeText:
    return refs.CodeText(Path('x.md'), 1, text, block)


def test_path_rule():
    tokens = list(refs.path_tokens(code(
        "python tools/train.py configs/fvit/<config>.py work_dirs/tools/x.py data/configs/y.py "
        "'configs/_base_/datasets/seg_{ade20k-150,ade20k-847}.py', (tools/test.py) "
        "tests/test_configs.py::\n test_every_config_folder_is_tested ~/.cache/densevlm_mm/x "
        "configs/densevlm/…_reference-compat.py $ROOT/tools/y.py")))
    assert tokens == ['tools/train.py', 'configs/_base_/datasets/seg_{ade20k-150,ade20k-847}.py',
                      'tools/test.py', 'tests/test_configs.py::test_every_config_folder_is_tested',
                      'configs/densevlm/…_reference-compat.py']
    assert all(refs.check_path(t) is None for t in tokens)
    assert 'no such file' in refs.check_path('configs/fvit/fvit_nothing.py')
    assert 'nothing matches' in refs.check_path('configs/fvit/*_nothing.py')
    assert 'seg_ade20k-999.py' in refs.check_path('configs/_base_/datasets/seg_{ade20k-150,ade20k-999}.py')
    assert 'defines no' in refs.check_path('tests/test_configs.py::test_nothing_like_this')
    assert refs.expand_braces('a{b,c{d,e}}f') == ['abf', 'acdf', 'acef']
    assert refs.expand_braces('{x}.py') == ['{x}.py']
