"""Every ```python block of the pages listed in ``docs/en/_runnable.txt`` runs, on the tiny
models of the embedded demo (blocks marked ``<!-- not-runnable: REASON -->`` only compile)."""
import shutil
from pathlib import Path

import docs_refs as refs
import pytest

pytestmark = pytest.mark.usefixtures('one_torch_thread')
RUNNABLE_LIST = refs.DOCS / '_runnable.txt'


def listed(path: Path):
    lines = (ln.split('#', 1)[0].strip() for ln in path.read_text().splitlines())
    return [ln for ln in lines if ln]


def runnable_pages():
    return [page for page in listed(RUNNABLE_LIST) if (refs.DOCS / page).is_file()]


def run_blocks(page: Path) -> int:
    """Compile every python block of ``page``, run the runnable ones in order in one namespace
    (in the current directory); the number run. A failure names the page and the block's line."""
    label = refs.rel(page)
    blocks = [c for c in refs.parse(page).code
              if c.block and c.lang in ('python', 'py', 'python3')]
    for block in blocks:        # every block compiles, runnable or not
        compile(block.text, f'{label}:{block.line}', 'exec')
        if block.not_runnable is not None and len(block.not_runnable.split()) < 3:
            raise AssertionError(f'{label}:{block.line}: not-runnable needs a reason of a few '
                                 f'words, got {block.not_runnable!r}')
    run = [b for b in blocks if b.not_runnable is None]
    namespace = {'__name__': '__docs__'}
    for block in run:
        try:
            exec(compile(block.text, f'{label}:{block.line}', 'exec'), namespace)
        except Exception as exc:
            raise AssertionError(f'{label}: the block at line {block.line} failed: '
                                 f'{type(exc).__name__}: {exc}') from exc
    return len(run)


def test_runnable_pages_exist_or_are_pending():
    pending = set(listed(refs.DOCS / '_pending.txt'))
    for page in listed(RUNNABLE_LIST):
        assert (refs.DOCS / page).is_file() or page in pending, \
            f'{page} is listed in _runnable.txt but neither exists nor is pending'


@pytest.mark.parametrize('page', runnable_pages())
def test_python_blocks_of_the_page_run(page, demo, tmp_path, monkeypatch):
    for name in ('configs', 'tools'):
        (tmp_path / name).symlink_to(refs.REPO / name)
    shutil.copytree(demo, tmp_path / 'work_dirs' / 'tiny_demo')
    monkeypatch.chdir(tmp_path)
    assert run_blocks(refs.DOCS / page) > 0, f'{page} has no runnable python block'


def test_failing_blocks_and_missing_reasons_are_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = tmp_path / 'p.md'
    page.write_text('# P\n\n<!-- not-runnable: needs a GPU and real weights -->\n```python\n'
                    'import nothing_like_this\n```\n\n```python\nx = 1\n```\n\n'
                    '```python\nassert x == 2, x\n```\n')
    blocks = [c for c in refs.parse(page).code if c.block]
    assert [b.not_runnable for b in blocks] == ['needs a GPU and real weights', None, None]
    assert [b.line for b in blocks] == [5, 9, 13]
    with pytest.raises(AssertionError, match=r'block at line 13 failed: AssertionError: 1'):
        run_blocks(page)
    page.write_text('```python\nx = 1\n```\n\n```python\nassert x == 1\n```\n')
    assert run_blocks(page) == 2
    page.write_text('<!-- not-runnable: gpu -->\n```python\nx = 1\n```\n')
    with pytest.raises(AssertionError, match='needs a reason'):
        run_blocks(page)
    page.write_text('```python\nx = (\n```\n')
    with pytest.raises(SyntaxError):
        run_blocks(page)
