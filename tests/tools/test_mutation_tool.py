"""tools/mutation.py without running mutmut: mutant names, equivalence blocks, counting and score,
stale entries, decorated functions, and the configuration's files and tests on disk."""
import os.path as osp
from pathlib import Path

import pytest

ROOT = Path(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

DIFF = '''--- densevlm_mm/a.py
+++ densevlm_mm/a.py
@@ -1,3 +1,3 @@
 def f(x):
-    return x < 2
+    return x <= 2
'''


@pytest.fixture(scope='module')
def mutation():
    from conftest import load_tool
    return load_tool('mutation.py')


def test_function_of_mutant_names(mutation):
    assert mutation.function_of('densevlm_mm.a.x_f__mutmut_12') == 'f'
    assert mutation.function_of('densevlm_mm.a.xǁGridǁ__init____mutmut_2') == 'Grid.__init__'
    assert mutation.function_of('pkg.mod.xǁCǁmethod__mutmut_3') == 'C.method'


def test_equivalence_block_round_trip_and_score(mutation, tmp_path):
    name = 'densevlm_mm.a.x_f__mutmut_1'
    block = mutation.format_block('densevlm_mm/a.py', name, DIFF, reason='x is never 2')
    assert block.splitlines()[:3] == ['## densevlm_mm/a.py :: f', '- return x < 2',
                                      '+ return x <= 2']
    # a folder: every *.txt file is read, other files are not
    (tmp_path / 'one.txt').write_text('# comment\n\n' + block + '\n')
    (tmp_path / 'notes.md').write_text(block.replace('f\n', 'g\n'))
    eq = mutation.load_equivalents(tmp_path)
    assert eq == {('densevlm_mm/a.py', 'f', ('return x < 2',), ('return x <= 2',)):
                  'x is never 2'}

    other = DIFF.replace('x <= 2', 'x < 3')
    results = {'densevlm_mm/a.py': {
        name: dict(status='survived', diff=DIFF),                      # listed: equivalent
        'densevlm_mm.a.x_f__mutmut_2': dict(status='survived', diff=other),
        'densevlm_mm.a.x_f__mutmut_3': dict(status='killed', diff=''),
        'densevlm_mm.a.x_f__mutmut_4': dict(status='timeout', diff=''),
        'densevlm_mm.a.x_f__mutmut_5': dict(status='no tests', diff=other),
        'densevlm_mm.a.x_f__mutmut_6': dict(status='not checked', diff=''),  # not run
    }}
    rows, survivors = mutation.summarize(results, eq)
    c = rows[0][1]
    assert c == dict(mutants=5, killed=2, survived=2, equivalent=1)
    assert [n for _, n, _ in survivors] == ['densevlm_mm.a.x_f__mutmut_2',
                                            'densevlm_mm.a.x_f__mutmut_5']
    assert mutation.score(c) == pytest.approx(100 * 2 / 4)
    assert mutation.score(dict(mutants=1, killed=0, survived=0, equivalent=1)) == 100.0
    assert mutation.stale_equivalents(results, eq) == []
    # once the mutant is killed, its entry is stale; entries of files not run are not judged
    results['densevlm_mm/a.py'][name]['status'] = 'killed'
    assert mutation.stale_equivalents(results, eq) == list(eq)
    assert mutation.stale_equivalents({'densevlm_mm/b.py': {}}, eq) == []


def test_decorated_functions_are_reported(mutation, tmp_path):
    src = tmp_path / 'm.py'
    src.write_text('import torch\n\n@torch.no_grad()\ndef a():\n    pass\n\n'
                   'class C:\n    @staticmethod\n    def b():\n        pass\n\n'
                   '    @property\n    def c(self):\n        return 1\n\n    def d(self):\n'
                   '        pass\n')
    assert mutation.decorated_functions(src) == ['a (@torch.no_grad())', 'C.c (@property)']


def test_config_files_tests_and_equivalents_exist(mutation):
    cfg = mutation.load_config()
    files = set()
    for name, group in cfg['groups'].items():
        for key in ('files', 'tests'):
            missing = [p for p in group[key] if not (ROOT / p).exists()]
            assert not missing, f'[groups.{name}] {key} not on disk: {missing}'
        files.update(group['files'])
    for t in cfg['settings']['common_tests']:
        assert (ROOT / t).is_file(), t
    eq = mutation.load_equivalents()
    assert eq, 'no equivalence entries read from tools/mutation_equivalents/'
    assert {sig[0] for sig in eq} <= files
    assert all(reason for reason in eq.values())
    # the core's inference paths are mutated: no decorator hides them from mutmut
    for path, fn in (('densevlm_mm/models/algorithms/densevlm.py', 'DenseVLM.predict'),
                     ('densevlm_mm/models/retrieval.py', 'RegionRetriever.forward'),
                     ('densevlm_mm/text_embeddings.py', 'build_text_embeddings')):
        decorated = [d.split(' ')[0] for d in mutation.decorated_functions(ROOT / path)]
        assert fn not in decorated, (path, decorated)


def test_resume_rewrites_the_test_selection_only_when_it_changes(mutation, tmp_path):
    (tmp_path / 'mutants').mkdir()
    text = '[tool.mutmut]\npytest_add_cli_args_test_selection = ["tests/a.py"]\nx = 1\n'
    for toml in (tmp_path / 'pyproject.toml', tmp_path / 'mutants' / 'pyproject.toml'):
        toml.write_text(text)
    before = (tmp_path / 'pyproject.toml').stat().st_mtime_ns
    mutation.set_test_selection(tmp_path, ['tests/a.py'])  # unchanged: mutmut keeps its results
    assert (tmp_path / 'pyproject.toml').stat().st_mtime_ns == before
    mutation.set_test_selection(tmp_path, ['tests/a.py', 'tests/b.py'])
    for toml in (tmp_path / 'pyproject.toml', tmp_path / 'mutants' / 'pyproject.toml'):
        assert toml.read_text().splitlines() == [
            '[tool.mutmut]', 'pytest_add_cli_args_test_selection = ["tests/a.py", "tests/b.py"]',
            'x = 1']
