"""Every relative link, image and ``#anchor`` of the repository's Markdown resolves, and the
docs pages link only where the Sphinx site can follow (other pages of ``docs/en``, files there)."""
from pathlib import Path

import docs_refs as refs
import pytest


@pytest.fixture(scope='module')
def docs():
    return {path: refs.parse(path) for path in refs.markdown_files()}


def test_the_docs_are_found(docs):
    names = {doc.rel for doc in docs.values()}
    assert {'README.md', 'configs/README.md', 'docs/en/index.md',
            'docs/en/get_started.md'} <= names
    assert not any('/_build/' in n or n.startswith('.venv') for n in names)


def test_every_relative_link_and_anchor_resolves(docs):
    broken, checked = [], 0
    for doc in docs.values():
        for line, href in doc.links:
            if refs.is_external(href):
                continue
            checked += 1
            reason = refs.check_link(doc, href, docs)
            if reason:
                broken.append(f'{doc.rel}:{line}: ({href}) {reason}')
    assert checked > 20
    assert not broken, 'broken links:\n' + '\n'.join(broken)


def test_docs_pages_link_only_inside_the_site(docs):
    """Sphinx resolves a link to another page of docs/en (or a file there); a link from a page to
    ``../../README.md`` or to a folder fails the site build, so it is refused here first."""
    outside = []
    for doc in docs.values():
        if not doc.path.is_relative_to(refs.DOCS):
            continue
        for line, href in doc.links:
            target = href.partition('#')[0]
            if refs.is_external(href) or not target:
                continue
            path = (doc.path.parent / target).resolve()
            if not path.is_relative_to(refs.DOCS) or path.is_dir():
                outside.append(f'{doc.rel}:{line}: ({href})')
    assert not outside, ('links from docs/en pages must stay in docs/en (name other files as '
                         '`path` in backticks instead):\n' + '\n'.join(outside))


def test_github_slug_rule():
    assert refs.github_slug('Python API (`densevlm_mm.apis`)'.replace('`', '')) == \
        'python-api-densevlm_mmapis'
    assert refs.github_slug('What make demo does') == 'what-make-demo-does'
    assert refs.github_slug('Mutation scores (2 cores, `--jobs 2`)'.replace('`', '')) == \
        'mutation-scores-2-cores---jobs-2'
    assert refs.github_slug('Open-vocabulary segmentation: SAN') == \
        'open-vocabulary-segmentation-san'


def test_a_broken_link_and_a_missing_anchor_are_found(tmp_path: Path):
    page = tmp_path / 'page.md'
    other = tmp_path / 'other.md'
    other.write_text('# Other\n\n## Same\n\n## Same\n\n<a id="custom"></a>\n')
    page.write_text('# Page `x`\n\n[a](other.md#same-1) [b](other.md#custom) [c](#page-x)\n'
                    '[d](other.md#nope) [e](missing.md) [f](#nope)\n\n'
                    '| t |\n|---|\n| [g](missing2.md) |\n')
    docs = {p: refs.parse(p) for p in (page, other)}
    results = {href: refs.check_link(docs[page], href, docs) for _, href in docs[page].links}
    assert results['other.md#same-1'] is None
    assert results['other.md#custom'] is None
    assert results['#page-x'] is None
    assert 'no heading #nope' in results['other.md#nope']
    assert 'no file' in results['missing.md']
    assert 'no heading #nope' in results['#nope']
    assert 'no file' in results['missing2.md']
