"""What the Markdown docs name, read with markdown-it (the parser MyST builds on): links, heading
anchors, repository paths, ``tools/`` command lines and Python code blocks.

The rules the docs tests apply:

* **Links**: every relative link / image of ``README.md``, ``configs/**/*.md`` and ``docs/**/*.md``
  names an existing file or folder; a ``#anchor`` names a heading of the target Markdown file
  (GitHub's slug rule, the one MyST's ``myst_heading_anchors`` uses too) or an HTML ``id``/``name``.
* **Paths**: a token inside backticks or a code block that starts with ``configs/``, ``tools/``,
  ``densevlm_mm/``, ``tests/``, ``docs/`` or ``requirements/`` (not preceded by another path
  character, so ``work_dirs/x/tools/...`` is not one) names something in the repository. ``{a,b}``
  expands as in bash; ``*``, ``...`` and ``…`` are globs that must match; ``::name`` (pytest ids)
  must be a ``def``/``class`` of that file; tokens with a ``<placeholder>`` or ``$VAR`` and build
  outputs (``docs/en/_build``) are not checked; ``work_dirs/``, ``data/``, ``checkpoints/`` never
  start a checked token.
* **Tool options**: in code (backticks or blocks), ``[python|bash] tools/X.(py|sh) ... --opt`` or a
  span that starts with a tool's file name (``train.py CONFIG [--work-dir]``): every ``--opt`` up to
  the end of the command (``#``, ``|``, ``&&``, ``;``, ``>``, the next tool) is an option of that
  tool's argparse parser. ``dist_*.sh`` / ``slurm_*.sh`` pass their extra options to
  ``train.py`` / ``test.py``. In code blocks, ``\\`` continues a line, and so does an indented line
  starting with ``[`` or ``-`` after a tool command (usage synopses).
"""
import argparse
import fnmatch
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / 'docs' / 'en'
PATH_ROOTS = ('configs', 'tools', 'densevlm_mm', 'tests', 'docs', 'requirements')
# Folders never scanned for Markdown: environments, outputs, data.
SKIP_DIRS = {'.git', '.venv', 'work_dirs', '_build', 'data', 'checkpoints', '__pycache__',
             'node_modules', '.pytest_cache', 'mutants'}
# Files a page tells the reader to write (they cannot exist in the repository).
READER_FILES = {
    'configs/densevlm/my_photos.py': 'the three-line config the reader writes (own_data.md)',
}
# Shell wrappers -> the Python tool that receives their extra options.
WRAPPERS = {'dist_train.sh': 'train.py', 'slurm_train.sh': 'train.py',
            'dist_test.sh': 'test.py', 'slurm_test.sh': 'test.py'}

_PARSER = MarkdownIt('commonmark').enable('table')
_PATH_RE = re.compile(r"(?<![\w./~$-])((?:%s)/[^\s`'\"]*)" % '|'.join(PATH_ROOTS))
_OPT_RE = re.compile(r'(?<![\w-])(--[A-Za-z][\w-]*)')
_TOOL_RE = re.compile(r'(?<![\w./-])(?:\./)?(tools/[\w/.-]+?\.(?:py|sh))(?![\w.])')
_HTML_ID_RE = re.compile(r'''<[^>]*\s(?:id|name)\s*=\s*["']([^"']+)["']''')
_HTML_REF_RE = re.compile(r'''<(?:a|img)\s[^>]*(?:href|src)\s*=\s*["']([^"']+)["']''')
_NOT_RUNNABLE_RE = re.compile(r'<!--\s*not-runnable:\s*(.*?)\s*-->', re.S)


@dataclass
class CodeText:
    """One piece of code of a Markdown file: an inline span or a (fenced / indented) block."""
    file: Path
    line: int                      # 1-based line of the span / the block's first line
    text: str
    block: bool
    lang: str = ''
    not_runnable: Optional[str] = None   # reason from a preceding <!-- not-runnable: ... -->


@dataclass
class Doc:
    """A parsed Markdown file."""
    path: Path
    links: List[Tuple[int, str]] = field(default_factory=list)
    anchors: Set[str] = field(default_factory=set)
    code: List[CodeText] = field(default_factory=list)

    @property
    def rel(self) -> str:
        return rel(self.path)


def rel(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


def github_slug(title: str) -> str:
    """GitHub's heading anchor (html-pipeline's toc filter): lower-case, drop every character
    that is not a word character, a hyphen or a space, spaces -> hyphens. MyST's
    ``myst_parser.slugs.github_slugify`` (used by the site build) is the same rule, so a link
    both this test and Sphinx accept works on GitHub and on the site."""
    return re.sub(r'[^\w\u4e00-\u9fff\- ]', '', title.lower().replace(' ', '-'))


def markdown_files() -> List[Path]:
    """Every Markdown file of the repository (outside environments, outputs and data)."""
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith('.'))
        found += [Path(root, f) for f in sorted(files) if f.endswith('.md')]
    return found


def _inline_text(token) -> str:
    return ''.join(c.content for c in (token.children or []) if c.type in ('text', 'code_inline'))


def parse(path: Path) -> Doc:
    """Links, anchors and code of one Markdown file."""
    doc = Doc(path)
    tokens = _PARSER.parse(path.read_text(encoding='utf-8'))
    seen: Dict[str, int] = {}
    for i, tok in enumerate(tokens):
        line = tok.map[0] + 1 if tok.map else 0
        if tok.type == 'heading_open':
            slug = github_slug(_inline_text(tokens[i + 1]))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            doc.anchors.add(slug if n == 0 else f'{slug}-{n}')
        elif tok.type in ('fence', 'code_block'):
            prev = tokens[i - 1] if i else None
            reason = None
            if prev is not None and prev.type == 'html_block':
                m = _NOT_RUNNABLE_RE.search(prev.content)
                reason = m.group(1) if m else None
            lang = tok.info.strip().split()[0] if tok.info.strip() else ''
            doc.code.append(CodeText(path, line + (tok.type == 'fence'), tok.content, True,
                                     lang, reason))
        elif tok.type == 'html_block':
            doc.anchors.update(_HTML_ID_RE.findall(tok.content))
            doc.links += [(line, ref) for ref in _HTML_REF_RE.findall(tok.content)]
        elif tok.type == 'inline':
            for child in tok.children or []:
                if child.type == 'link_open':
                    doc.links.append((line, child.attrs.get('href', '')))
                elif child.type == 'image':
                    doc.links.append((line, child.attrs.get('src', '')))
                elif child.type == 'code_inline':
                    doc.code.append(CodeText(path, line, child.content, False))
                elif child.type == 'html_inline':
                    doc.anchors.update(_HTML_ID_RE.findall(child.content))
                    doc.links += [(line, ref) for ref in _HTML_REF_RE.findall(child.content)]
    return doc


# ----------------------------------------------------------------------------------------- links
def is_external(href: str) -> bool:
    return bool(re.match(r'^[a-z][a-z0-9+.-]*:', href, re.I))


def check_link(doc: Doc, href: str, docs: Dict[Path, Doc]) -> Optional[str]:
    """``None`` when ``href`` (relative, optionally with ``#anchor``) resolves, else the reason."""
    target, _, anchor = href.partition('#')
    path = (doc.path.parent / target).resolve() if target else doc.path
    if not path.exists():
        return f'no file {rel(path)}'
    if anchor:
        if path.suffix != '.md':
            return f'anchor #{anchor} on a non-Markdown file'
        tdoc = docs.get(path) or parse(path)
        if anchor not in tdoc.anchors:
            return f'no heading #{anchor} in {tdoc.rel}'
    return None


# ----------------------------------------------------------------------------------------- paths
def expand_braces(token: str) -> List[str]:
    """Bash brace expansion (``a{b,c{d,e}}f`` -> abf acdf acef)."""
    depth, start = 0, None
    for i, ch in enumerate(token):
        if ch == '{':
            if depth == 0:
                start = i
            depth += 1
        elif ch == '}' and depth:
            depth -= 1
            if depth == 0:
                inner, parts, level, last = token[start + 1:i], [], 0, 0
                for j, c in enumerate(inner):
                    level += c == '{'
                    level -= c == '}'
                    if c == ',' and level == 0:
                        parts.append(inner[last:j])
                        last = j + 1
                parts.append(inner[last:])
                if len(parts) == 1:     # {x}: not an alternative (e.g. a format field)
                    continue
                return [out for p in parts
                        for out in expand_braces(token[:start] + p + token[i + 1:])]
    return [token]


def path_tokens(code: CodeText) -> Iterator[str]:
    """Repository paths named in a piece of code (placeholders dropped, punctuation trimmed)."""
    for raw in _PATH_RE.findall(re.sub(r'::\s+', '::', code.text)):
        token = raw
        while token and token[-1] in '.,;:)]}' and not (
                token[-1] == '}' and token.count('{') == token.count('}')) and not (
                token[-1] == ')' and token.count('(') == token.count(')')):
            token = token[:-1]
        token = re.sub(r':\d+(-\d+)?$', '', token)      # file:line
        if '<' in token or '>' in token or '$' in token or '/_build' in token or not token:
            continue
        yield token


def check_path(token: str) -> Optional[str]:
    """``None`` when ``token`` names something in the repository, else the reason."""
    if token in READER_FILES:
        return None
    for alt in expand_braces(token):
        path, _, name = alt.partition('::')
        pattern = re.sub(r'\.\.\.|…', '*', path)
        if any(c in pattern for c in '*?['):
            if not list(REPO.glob(pattern.rstrip('/'))):
                return f'nothing matches {alt}'
            continue
        full = REPO / path
        if not full.exists():
            return f'no such file or folder: {alt}'
        if name:
            fn = name.split('::')[-1].split('[')[0]
            if not re.search(rf'^\s*(?:async\s+)?(?:def|class)\s+{re.escape(fn)}\b',
                             full.read_text(), re.M):
                return f'{path} defines no {fn}'
    return None


# ----------------------------------------------------------------------------------------- tools
def tool_files() -> Dict[str, str]:
    """Basename -> path under ``tools/`` of every tool whose basename is unique."""
    names: Dict[str, List[str]] = {}
    for p in sorted((REPO / 'tools').rglob('*')):
        if p.suffix in ('.py', '.sh') and p.name != '__init__.py':
            names.setdefault(p.name, []).append(p.relative_to(REPO).as_posix())
    return {n: ps[0] for n, ps in names.items() if len(ps) == 1}


def logical_lines(code: CodeText) -> List[Tuple[int, str]]:
    """The code's commands: ``\\``-continued and indented usage continuations joined."""
    if not code.block:
        return [(code.line, code.text)]
    out: List[Tuple[int, str]] = []
    joining = False
    for k, line in enumerate(code.text.split('\n')):
        stripped = line.strip()
        continuation = joining or (
            out and line[:1] in (' ', '\t') and stripped[:1] in ('[', '-')
            and _TOOL_RE.search(out[-1][1]))
        if continuation and out:
            out[-1] = (out[-1][0], out[-1][1] + ' ' + stripped.rstrip('\\'))
        else:
            out.append((code.line + k, stripped.rstrip('\\')))
        joining = stripped.endswith('\\')
    return out


def tool_commands(code: CodeText, basenames: Dict[str, str]) -> Iterator[Tuple[int, str, Set[str]]]:
    """``(line, tool path, options named)`` for each tool command in the code."""
    for line, text in logical_lines(code):
        starts = [(m.start(), m.end(), m.group(1)) for m in _TOOL_RE.finditer(text)]
        if not starts and not code.block:
            first = text.split(maxsplit=1)[0] if text.strip() else ''
            if first in basenames:
                starts = [(0, len(first), basenames[first])]
        for k, (_, end, tool) in enumerate(starts):
            stop = starts[k + 1][0] if k + 1 < len(starts) else len(text)
            yield line, tool, set(_OPT_RE.findall(command_end(text[end:stop])))


def command_end(args: str) -> str:
    """``args`` up to the end of the shell command: a comment, a pipe, ``&&``, ``;`` or a
    redirection outside quotes and brackets (``[a|b]`` / ``(a | b)`` are alternatives of a
    synopsis)."""
    depth, quote = 0, ''
    for i, ch in enumerate(args):
        if quote:
            quote = '' if ch == quote else quote
        elif ch in '\'"':
            quote = ch
        elif ch in '([{':
            depth += 1
        elif ch in ')]}':
            depth = max(depth - 1, 0)
        elif depth == 0 and (ch in '|;>' or args.startswith('&&', i)
                             or (ch == '#' and (i == 0 or args[i - 1].isspace()))):
            return args[:i]
    return args


def target_tool(tool: str) -> str:
    """The Python tool whose parser checks the options given to ``tool``."""
    name = tool.rsplit('/', 1)[-1]
    return f'tools/{WRAPPERS[name]}' if name in WRAPPERS else tool


def matches_any(path: str, patterns: List[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) for p in patterns)


class _ParserCaptured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__('parser captured')
        self.parser = parser


def tool_parser(relpath: str) -> argparse.ArgumentParser:
    """The argparse parser of ``tools/<relpath>``, without running the tool.

    The module is imported (its top level only defines things), then its ``build_parser`` /
    ``parse_args`` / ``main`` is called with ``ArgumentParser.parse_args`` replaced by a function
    that raises the parser before anything of the tool runs.
    """
    path = REPO / relpath
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(
        'densevlm_docs_tool_' + re.sub(r'\W', '_', relpath), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if callable(getattr(module, 'build_parser', None)):
        return module.build_parser()

    def capture(self, *args, **kwargs):
        raise _ParserCaptured(self)

    saved = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_args = argparse.ArgumentParser.parse_known_args = capture
    try:
        for name in ('parse_args', 'main'):
            fn = getattr(module, name, None)
            if not callable(fn):
                continue
            takes_argv = bool(inspect.signature(fn).parameters)
            try:
                fn([]) if takes_argv else fn()
            except _ParserCaptured as captured:
                return captured.parser
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = saved
    raise LookupError(f'{relpath}: no build_parser / parse_args / main that builds an '
                      'argparse parser before doing anything')


def parser_options(parser: argparse.ArgumentParser) -> Set[str]:
    """Every option string (``--x``, ``-x``) of ``parser``."""
    return {s for action in parser._actions for s in action.option_strings}


def figures() -> Dict[str, int]:
    """What the docs tests check, counted (``python tests/docs/docs_refs.py`` prints it)."""
    docs = {p: parse(p) for p in markdown_files()}
    basenames = tool_files()
    links = [(d, h) for d in docs.values() for _, h in d.links if not is_external(h)]
    code = [c for d in docs.values() for c in d.code]
    commands = [cmd for c in code for cmd in tool_commands(c, basenames)]
    runnable = [ln.split('#', 1)[0].strip() for ln in (DOCS / '_runnable.txt').read_text().splitlines()]
    blocks = [c for page in runnable if page and (DOCS / page).is_file()
              for c in parse(DOCS / page).code if c.block and c.lang in ('python', 'py', 'python3')]
    return {'markdown files': len(docs),
            'relative links': len(links),
            'links with an anchor': sum('#' in h for _, h in links),
            'path tokens': sum(1 for c in code for _ in path_tokens(c)),
            'distinct paths': len({t for c in code for t in path_tokens(c)}),
            'tool commands': len(commands),
            'tool commands with options': sum(bool(o) for *_, o in commands),
            'options checked': sum(len(o) for *_, o in commands),
            'distinct (tool, option) pairs': len({(target_tool(t), x) for _, t, o in commands for x in o}),
            'python blocks in runnable pages': len(blocks),
            'of them run': sum(b.not_runnable is None for b in blocks)}


if __name__ == '__main__':
    for key, value in figures().items():
        print(f'{key}: {value}')
