"""The site's structure without running Sphinx (the build itself runs in CI: `make docs`, Sphinx
with warnings as errors): every page sits in a toctree, every toctree entry is a page or a planned
one (``docs/en/_pending.txt``), and ``conf.py`` drops exactly the missing planned entries."""
import importlib.util
import re

import docs_refs as refs
import pytest


@pytest.fixture(scope='module')
def conf():
    spec = importlib.util.spec_from_file_location('densevlm_docs_conf', refs.DOCS / 'conf.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toctree_entries():
    """(page holding the toctree, docname) of every toctree entry of every page."""
    found = []
    for page in sorted(refs.DOCS.rglob('*.md')):
        if '_build' in page.parts:
            continue
        docname = page.relative_to(refs.DOCS).with_suffix('').as_posix()
        folder = docname.rsplit('/', 1)[0] + '/' if '/' in docname else ''
        for code in refs.parse(page).code:
            if code.block and code.lang == '{toctree}':
                found += [(docname, folder + ln.strip().removesuffix('.md'))
                          for ln in code.text.splitlines()
                          if ln.strip() and not ln.strip().startswith(':')]
    return found


def test_every_page_is_in_a_toctree_and_every_entry_is_a_page_or_planned(conf):
    entries = [name for _, name in toctree_entries()]
    pending = conf.pending_pages()
    pages = {p.relative_to(refs.DOCS).with_suffix('').as_posix()
             for p in refs.DOCS.rglob('*.md') if '_build' not in p.parts}
    assert {'index', 'get_started', 'user_guides/align'} <= pages
    assert not sorted(pages - set(entries) - {'index'}), 'pages outside every toctree'
    missing = [e for e in entries if e not in pages and e not in pending]
    assert not missing, f'toctree entries with neither a page nor a _pending.txt line: {missing}'
    assert len(entries) == len(set(entries)), 'a page is listed twice'


def test_every_planned_page_has_its_toctree_entry(conf):
    entries = {name for _, name in toctree_entries()}
    pending = conf.pending_pages()
    assert 'user_guides/api' in pending or (refs.DOCS / 'user_guides/api.md').is_file()
    assert not sorted(set(pending) - entries), 'planned pages without a toctree entry'


def test_conf_drops_only_missing_planned_entries(conf):
    text = ('# Title\n\n```{toctree}\n:maxdepth: 2\n\nget_started\nuser_guides/api\n'
            'user_guides/align.md\n```\n\nuser_guides/api stays in prose\n')
    present = {'get_started', 'user_guides/align'}
    out = conf.drop_missing_pending(text, 'index', ['user_guides/api', 'user_guides/align'],
                                    present.__contains__)
    assert out == text.replace('user_guides/api\nuser_guides/align.md',
                               'user_guides/align.md')
    # entries are relative to the page holding the toctree
    sub = '```{toctree}\napi\nalign\n```\n'
    assert conf.drop_missing_pending(sub, 'user_guides/index', ['user_guides/api'],
                                     present.__contains__) == '```{toctree}\nalign\n```\n'
    assert conf.drop_missing_pending(text, 'index', [], present.__contains__) == text


def test_the_ci_builds_the_site_with_warnings_as_errors():
    makefile = (refs.REPO / 'Makefile').read_text()
    rule = re.search(r'^docs:.*?(?=^\S|\Z)', makefile, re.M | re.S).group(0)
    assert 'requirements/docs.txt' in rule and re.search(r'sphinx .*-W --keep-going', rule)
    ci = (refs.REPO / '.ci' / 'run').read_text()
    assert re.search(r'^make docs$', ci, re.M)
    pins = (refs.REPO / 'requirements' / 'docs.txt').read_text()
    assert re.search(r'^sphinx==', pins, re.M) and re.search(r'^myst-parser==', pins, re.M)
