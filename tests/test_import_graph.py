"""The import graph of ``densevlm_mm``, built from the sources: no cycles, one direction.

Every ``import`` / ``from ... import`` statement of every module (relative and absolute, at module
level or inside functions) is an edge to the module it names: ``from pkg import name`` points at
``pkg.name`` when that is a module, else at ``pkg``. Imports under ``if TYPE_CHECKING:`` are left
out. Rules (issue 9, "one import direction"):

* no cycle between modules of ``densevlm_mm`` (function-level imports included);
* the backbones (``models/backbones``, ``models/clip_factory``) import nothing from the method
  (retrieval, losses, heads, algorithms, frozen / crop teachers), data, evaluation, engine,
  visualization or apis — neither directly nor through the modules they import;
* datasets import nothing from ``models``; evaluation nothing from the algorithms; downstream
  models (``models/detectors``, ``models/segmentors``) nothing from the algorithms;
* ``utils`` imports nothing of the packages above it (``register_all_modules`` imports them
  inside the function, on purpose: see ``LAZY_HUBS``);
* nothing in ``densevlm_mm`` imports ``tools``.
"""
import ast
from pathlib import Path
from typing import Dict, List, NamedTuple, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = 'densevlm_mm'


class Edge(NamedTuple):
    source: str
    target: str
    line: int
    lazy: bool  # inside a function: runs when called, not when the module is imported


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / PKG).rglob('*.py'))}


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.found: List[Tuple[str, List[str], int, bool]] = []  # (base, names, line, lazy)
        self._depth = 0

    def _function(self, node) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, 'attr', None)
        if name == 'TYPE_CHECKING':  # typing only: never executed
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, [], node.lineno, self._depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.module if self.is_package else self.module.rpartition('.')[0]
            parts = package.split('.')
            if node.level > 1:
                parts = parts[:len(parts) - (node.level - 1)]
            base = '.'.join(parts + ([node.module] if node.module else []))
        else:
            base = node.module or ''
        self.found.append((base, [a.name for a in node.names], node.lineno, self._depth > 0))


def build_graph() -> Tuple[Dict[str, Path], List[Edge], List[str]]:
    """Modules, edges between ``densevlm_mm`` modules (and to ``tools``), unresolved imports."""
    modules = _modules()
    edges: List[Edge] = []
    unresolved: List[str] = []
    for name, path in modules.items():
        collector = _Collector(name, path.name == '__init__.py')
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        for base, names, line, lazy in collector.found:
            top = base.split('.')[0]
            if top == 'tools':
                edges.append(Edge(name, base, line, lazy))
                continue
            if top != PKG:
                continue
            targets = [f'{base}.{n}' for n in names if f'{base}.{n}' in modules]
            if len(targets) < len(names) or not names:
                targets.append(base)  # a name defined in `base` (or `import base`)
            for target in targets:
                if target not in modules:
                    unresolved.append(f'{path.relative_to(ROOT)}:{line} imports {target}')
                    continue
                if target != name:
                    edges.append(Edge(name, target, line, lazy))
    return modules, edges, unresolved


MODULES, EDGES, UNRESOLVED = build_graph()


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + '.') for p in prefixes)


# Modules whose function-level imports reach up on purpose; those edges are not followed.
LAZY_HUBS = {
    f'{PKG}.utils.setup_env': 'register_all_modules imports every package to fill the registries',
    f'{PKG}.models': 'its __getattr__ loads the training algorithms on first use',
}


def _followed(edge: Edge) -> bool:
    return not (edge.lazy and edge.source in LAZY_HUBS)


def _reach(source: str) -> Dict[str, List[str]]:
    """Modules ``source`` depends on, directly or through others (imports inside functions
    included, except those of :data:`LAZY_HUBS`), with one path to each."""
    paths = {source: [source]}
    todo = [source]
    while todo:
        current = todo.pop()
        for edge in EDGES:
            if edge.source == current and _followed(edge) and edge.target not in paths:
                paths[edge.target] = paths[current] + [edge.target]
                todo.append(edge.target)
    return paths


BACKBONES = (f'{PKG}.models.backbones', f'{PKG}.models.clip_factory')
METHOD = tuple(f'{PKG}.models.{m}' for m in ('retrieval', 'losses', 'heads', 'algorithms',
                                              'frozen_teacher', 'crop_teacher'))
ABOVE_BACKBONES = METHOD + tuple(f'{PKG}.{p}' for p in (
    'datasets', 'evaluation', 'engine', 'visualization', 'apis'))
ABOVE_UTILS = tuple(f'{PKG}.{p}' for p in (
    'models', 'datasets', 'evaluation', 'engine', 'visualization', 'apis'))
DOWNSTREAM = (f'{PKG}.models.detectors', f'{PKG}.models.segmentors')
ALGORITHMS = (f'{PKG}.models.algorithms', )

# (who, must not depend on)
RULES = [
    (BACKBONES, ABOVE_BACKBONES),
    ((f'{PKG}.datasets', ), (f'{PKG}.models', )),
    ((f'{PKG}.evaluation', ), ALGORITHMS),
    (DOWNSTREAM, ALGORITHMS),
    ((f'{PKG}.utils', ), ABOVE_UTILS),
    ((PKG, ), ('tools', )),
]


def _sccs() -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    graph: Dict[str, Set[str]] = {m: set() for m in MODULES}
    for edge in EDGES:
        if edge.target in graph:
            graph[edge.source].add(edge.target)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_graph_sees_the_package():
    """The parser finds the modules and the edges it must (guards the test itself)."""
    assert f'{PKG}.models.retrieval' in MODULES and f'{PKG}.engine.hooks' in MODULES
    pairs = {(e.source, e.target) for e in EDGES}
    # relative `from ..retrieval import x` inside a subpackage
    assert (f'{PKG}.models.losses.decoupled_align_loss', f'{PKG}.models.retrieval') in pairs
    # a function-level import is an edge, marked lazy
    lazy = {(e.source, e.target) for e in EDGES if e.lazy}
    assert (f'{PKG}.utils.setup_env', f'{PKG}.datasets') in lazy
    # `from pkg import module` points at the module
    assert (f'{PKG}.engine.hooks', f'{PKG}.engine.hooks.weight_ensemble_hook') in pairs


def test_every_internal_import_resolves():
    assert not UNRESOLVED, 'imports of modules that do not exist:\n' + '\n'.join(UNRESOLVED)


def test_no_import_cycles():
    cycles = _sccs()
    detail = []
    for component in cycles:
        members = set(component)
        detail.append(' <-> '.join(component) + '\n    ' + '\n    '.join(
            f'{e.source} -> {e.target} (line {e.line}{", in a function" if e.lazy else ""})'
            for e in EDGES if e.source in members and e.target in members))
    assert not cycles, 'import cycles inside densevlm_mm:\n' + '\n'.join(detail)


@pytest.mark.parametrize('sources,forbidden', RULES,
                         ids=['backbones', 'datasets', 'evaluation', 'downstream', 'utils',
                              'tools'])
def test_one_import_direction(sources, forbidden):
    bad = []
    for edge in EDGES:  # direct imports, where they are written
        if _in(edge.source, *sources) and _in(edge.target, *forbidden) and _followed(edge):
            bad.append(f'{edge.source}:{edge.line} imports {edge.target}'
                       f'{" (in a function)" if edge.lazy else ""}')
    for module in MODULES:  # and what it depends on through other modules
        if not _in(module, *sources):
            continue
        for target, path in _reach(module).items():
            if _in(target, *forbidden) and len(path) > 2:
                bad.append(f'{module} depends on {target}: ' + ' -> '.join(path))
    assert not bad, 'forbidden imports:\n' + '\n'.join(sorted(set(bad)))


def test_rules_can_fail():
    """The checks see a forbidden edge and a cycle when there is one (synthetic graph)."""
    global EDGES
    saved = EDGES
    try:
        EDGES = saved + [Edge(f'{PKG}.models.backbones.vit', f'{PKG}.models.losses', 1, True),
                         Edge(f'{PKG}.models.retrieval', f'{PKG}.models.heads', 1, False),
                         Edge(f'{PKG}.models.heads', f'{PKG}.models.retrieval', 1, True)]
        with pytest.raises(AssertionError, match='backbones.vit:1 imports'):
            test_one_import_direction(*RULES[0])
        with pytest.raises(AssertionError, match='import cycles'):
            test_no_import_cycles()
        # through another module: a backbone importing the whole `utils` package is fine only
        # while utils itself reaches nothing above (its register_all_modules is a lazy hub)
        EDGES = saved + [Edge(f'{PKG}.models.backbones.vit', f'{PKG}.utils', 1, False),
                         Edge(f'{PKG}.utils', f'{PKG}.utils.tiny_demo', 1, False),
                         Edge(f'{PKG}.utils.tiny_demo', f'{PKG}.engine', 1, True)]
        with pytest.raises(AssertionError, match='backbones.vit depends on densevlm_mm.engine'):
            test_one_import_direction(*RULES[0])
        with pytest.raises(AssertionError, match='utils.tiny_demo:1 imports densevlm_mm.engine'):
            test_one_import_direction(*RULES[4])
    finally:
        EDGES = saved
