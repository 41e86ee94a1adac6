"""Sphinx configuration of the densevlm-mm documentation (Markdown pages read by MyST).

Build it from the repository root with ``make docs``, i.e.
``python -m sphinx -W --keep-going -b html docs/en docs/en/_build/html``: every warning (a broken
link or anchor, a page outside the toctrees, a toctree entry without its page) fails the build.

Pages listed in ``_pending.txt`` are planned and written in other branches; until a listed page
exists, its toctree entry is dropped (``drop_missing_pending``) so that the build stays strict for
everything that exists. ``DOCS_STRICT=1`` switches that off: then a planned page that is still
missing fails the build.
"""
import os
import re
from pathlib import Path
from typing import Callable, List

HERE = Path(__file__).resolve().parent

project = 'densevlm-mm'
author = 'densevlm-mm contributors'
copyright = '2025, densevlm-mm contributors'
extensions = ['myst_parser']
source_suffix = {'.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build']
# GitHub-style anchors for headings down to ####: `page.md#some-heading` links work on GitHub
# and on the site alike (tests/docs check them with the same rule).
myst_heading_anchors = 4
html_theme = 'alabaster'
html_title = 'densevlm-mm'
html_theme_options = {'description': 'DenseVLM region-language alignment for OpenMMLab'}


def pending_pages(path: Path = HERE / '_pending.txt') -> List[str]:
    """Docnames (paths below ``docs/en`` without ``.md``) of the planned pages."""
    if not path.is_file():
        return []
    lines = (ln.split('#', 1)[0].strip() for ln in path.read_text().splitlines())
    return [ln[:-len('.md')] if ln.endswith('.md') else ln for ln in lines if ln]


def drop_missing_pending(text: str, docname: str, pending: List[str],
                         exists: Callable[[str], bool]) -> str:
    """``text`` without the toctree entries that name a pending page whose file is missing.

    ``docname`` is the page holding the toctree (entries are relative to its folder);
    ``exists(docname)`` tells whether a page's file is there.
    """
    folder = docname.rsplit('/', 1)[0] + '/' if '/' in docname else ''
    out, in_toctree = [], False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if re.match(r'^(```+|:::+)\{toctree\}', stripped):
            in_toctree = True
        elif in_toctree and re.match(r'^(```+|:::+)$', stripped):
            in_toctree = False
        elif in_toctree and stripped and not stripped.startswith(':'):
            entry = stripped[:-len('.md')] if stripped.endswith('.md') else stripped
            target = os.path.normpath(folder + entry).replace(os.sep, '/')
            if target in pending and not exists(target):
                continue
        out.append(line)
    return ''.join(out)


def _drop_missing(app, docname: str, source: List[str]) -> None:
    if os.environ.get('DOCS_STRICT') == '1':
        return
    source[0] = drop_missing_pending(source[0], docname, pending_pages(),
                                     lambda name: (HERE / f'{name}.md').is_file())


def setup(app):
    app.connect('source-read', _drop_missing)
    return {'parallel_read_safe': True}
