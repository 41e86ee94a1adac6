"""Mutation testing of the core modules with mutmut (``make mutation``; not part of ``make test``).

For each group of ``tools/mutation_config.toml`` (source files + the test files that cover them)
this copies the package, tests and configs into ``<work-dir>/<group>/``, runs ``mutmut run``
there (the working tree is never modified; mutmut runs, for each mutant, only the tests that
call the mutated function), and prints per module: mutants, killed (incl. timeouts), survived,
survivors listed as equivalent in ``tools/mutation_equivalents/<group>.txt``, and the score

    score = killed / (mutants - equivalent)

Usage::

    python tools/mutation.py                       # all groups, 2 parallel mutants
    python tools/mutation.py --groups metric sampler --jobs 1
    python tools/mutation.py --exclude-tests tests/test_thresholds.py   # score without a file
    python tools/mutation.py --list                # groups, files and tests
    python tools/mutation.py --groups fvit_head    # an optional (downstream) group

Survivors that are not listed as equivalent are printed with their diff (also written to
``<work-dir>/<group>/survivors.txt``). To list one as equivalent, copy its block from there into
``tools/mutation_equivalents/<group>.txt`` and add a ``reason:`` line (every ``*.txt`` file of
that folder is read).
"""
import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / 'tools' / 'mutation_config.toml'
EQUIVALENTS = ROOT / 'tools' / 'mutation_equivalents'
PACKAGE = 'densevlm_mm'

# Executed inside a group's work dir after ``mutmut run``: statuses and diffs as JSON.
_COLLECT = r'''
import json, sys
from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
out = {}
for path in sys.argv[1:]:
    data = SourceFileMutationData(path=path)
    data.load()
    rows = {}
    for name, code in data.exit_code_by_key.items():
        status = status_by_exit_code[code]
        diff = ''
        if status not in ('killed', 'timeout'):
            try:
                diff = get_diff_for_mutant(name, path=path)
            except Exception as exc:  # noqa: BLE001
                diff = f'<no diff: {exc}>'
        rows[name] = dict(status=status, diff=diff)
    out[path] = rows
print('@@MUTATION-JSON@@' + json.dumps(out))
'''


def decorated_functions(path: Path) -> List[str]:
    """Functions mutmut leaves alone: it does not mutate functions with decorators other than
    ``staticmethod`` / ``classmethod`` (e.g. ``@torch.no_grad()``)."""
    import ast
    out = []
    tree = ast.parse(path.read_text(encoding='utf-8'))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            inner = [(f'{node.name}.{n.name}', n) for n in node.body
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        elif isinstance(node, ast.Module):
            inner = [(n.name, n) for n in node.body
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        else:
            continue
        for name, fn in inner:
            decos = [ast.unparse(d) for d in fn.decorator_list]
            if decos and not (len(decos) == 1 and decos[0] in ('staticmethod', 'classmethod')):
                out.append(f'{name} (@{", @".join(decos)})')
    return out


def load_config(path: Path = CONFIG) -> dict:
    with open(path, 'rb') as f:
        return tomllib.load(f)


# ------------------------------------------------------------------------------- equivalents
def function_of(mutant: str) -> str:
    """``pkg.mod.xǁClassǁmethod__mutmut_3`` -> ``Class.method``; ``pkg.mod.x_func__mutmut_1``
    -> ``func``."""
    tail = re.sub(r'__mutmut_\d+$', '', mutant)
    if 'ǁ' in tail:
        parts = tail.split('ǁ')
        return '.'.join(p for p in parts[1:] if p)
    return tail.rsplit('.', 1)[-1][2:]  # drop the trampoline's "x_" prefix


def changed_lines(diff: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    minus, plus = [], []
    for line in diff.splitlines():
        if line.startswith(('---', '+++')):
            continue
        if line.startswith('-'):
            minus.append(line[1:].strip())
        elif line.startswith('+'):
            plus.append(line[1:].strip())
    return tuple(minus), tuple(plus)


def signature(path: str, mutant: str, diff: str) -> tuple:
    return (path, function_of(mutant)) + changed_lines(diff)


def load_equivalents(path: Path = EQUIVALENTS) -> Dict[tuple, str]:
    """Blocks of ``## <file> :: <function>``, the ``-``/``+`` lines of the diff, ``reason: ...``,
    read from ``path`` (a file, or every ``*.txt`` file of a folder)."""
    out: Dict[tuple, str] = {}
    if path.is_dir():
        for f in sorted(path.glob('*.txt')):
            out.update(load_equivalents(f))
        return out
    if not path.is_file():
        return out
    head, minus, plus = None, [], []
    for raw in path.read_text(encoding='utf-8').splitlines():
        line = raw.rstrip('\n')
        if line.startswith('## '):
            file_, _, func = line[3:].partition(' :: ')
            head, minus, plus = (file_.strip(), func.strip()), [], []
        elif head and line.startswith('-'):
            minus.append(line[1:].strip())
        elif head and line.startswith('+'):
            plus.append(line[1:].strip())
        elif head and line.startswith('reason:'):
            out[head + (tuple(minus), tuple(plus))] = line[len('reason:'):].strip()
            head = None
    return out


def format_block(path: str, mutant: str, diff: str, reason: str = '') -> str:
    minus, plus = changed_lines(diff)
    lines = [f'## {path} :: {function_of(mutant)}']
    lines += [f'- {m}' for m in minus] + [f'+ {p}' for p in plus]
    lines.append(f'reason: {reason}' if reason else f'# {mutant}')
    return '\n'.join(lines)


# ------------------------------------------------------------------------------------ running
def _ignore(_dir, names):
    return [n for n in names if n in ('__pycache__', '.pytest_cache', 'mutants')
            or n.endswith('.pyc')]


def group_tests(spec: dict, settings: dict, exclude_tests: List[str]) -> List[str]:
    """The group's test files on disk (+ the common ones for core groups), less the excluded."""
    wanted = list(spec['tests'])
    if not spec.get('optional'):
        wanted += [t for t in settings.get('common_tests', []) if t not in wanted]
    return [t for t in wanted if (ROOT / t).exists()
            and not any(t == e or t.startswith(e.rstrip('/') + '/') for e in exclude_tests)]


def set_test_selection(wd: Path, tests: List[str]) -> None:
    """Rewrite the test files of an existing work dir's mutmut configuration (``--resume``)."""
    for toml in (wd / 'pyproject.toml', wd / 'mutants' / 'pyproject.toml'):
        if toml.is_file():
            text = toml.read_text()
            lines = [('pytest_add_cli_args_test_selection = ' + json.dumps(tests))
                     if ln.startswith('pytest_add_cli_args_test_selection') else ln
                     for ln in text.splitlines()]
            if '\n'.join(lines) + '\n' != text:  # a change makes mutmut forget its results
                toml.write_text('\n'.join(lines) + '\n')


def refresh_package(wd: Path, mutated: List[str], log) -> None:
    """``--resume``: copy the working tree's unmutated package modules into the work dir (the
    tests may need their current version); warn when a mutated file changed since the fresh run
    (its mutants are stale)."""
    for src in (ROOT / PACKAGE).rglob('*.py'):
        rel = src.relative_to(ROOT).as_posix()
        if rel in mutated:
            old = wd / rel
            if old.is_file() and old.read_bytes() != src.read_bytes():
                log(f'  WARNING: {rel} changed since the fresh run: its mutants are stale, '
                    f'run the group without --resume')
            continue
        for dest in (wd / rel, wd / 'mutants' / rel):
            if dest.parent.is_dir() and (not dest.is_file()
                                         or dest.read_bytes() != src.read_bytes()):
                shutil.copy2(src, dest)


def prepare(group: str, spec: dict, settings: dict, work: Path, exclude_tests: List[str],
            only_files: List[str]) -> Tuple[Path, List[str], List[str]]:
    """Copy the tree into ``work/group`` and write its mutmut configuration."""
    files = [f for f in spec['files'] if (ROOT / f).is_file()
             and (not only_files or any(o in f for o in only_files))]
    tests = group_tests(spec, settings, exclude_tests)
    wd = work / group
    if wd.exists():
        shutil.rmtree(wd)
    wd.mkdir(parents=True)
    shutil.copytree(ROOT / PACKAGE, wd / PACKAGE, ignore=_ignore)
    shutil.copytree(ROOT / 'tests', wd / 'tests', ignore=_ignore)
    also = []
    for name in settings.get('also_copy', []):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, wd / name, ignore=_ignore)
        elif src.is_file():
            shutil.copy2(src, wd / name)
        else:
            continue
        also.append(name)
    toml = ['[tool.mutmut]',
            f'source_paths = ["{PACKAGE}"]',
            'only_mutate = ' + json.dumps(files),
            'pytest_add_cli_args_test_selection = ' + json.dumps(tests),
            'pytest_add_cli_args = ' + json.dumps(
                ['-p', 'no:cacheprovider', '-q'] + list(spec.get('pytest_args', []))),
            'do_not_mutate_patterns = ' + json.dumps(
                list(settings.get('skip_lines', [])) + list(spec.get('skip_lines', []))),
            'also_copy = ' + json.dumps(also),
            f'process_isolation = "{settings.get("isolation", "fork")}"',
            'use_git_change_detection = false',
            'track_dependencies = false']
    (wd / 'pyproject.toml').write_text('\n'.join(toml) + '\n')
    return wd, files, tests


def shared_demo(wd: Path, log) -> Path:
    """The tests' tiny demo (``tests/conftest.py``: ``demo`` fixture), prepared once per work dir
    with the working tree's (unmutated) package; mutant processes then skip its ~7 s set-up."""
    root = wd / 'test_demo'
    if not (root / '.demo-complete').is_file():
        code = ('import sys; sys.path.insert(0, "tests"); '
                'from conftest import prepare_test_demo; prepare_test_demo(sys.argv[1])')
        res = subprocess.run([sys.executable, '-c', code, str(root)], cwd=ROOT,
                             capture_output=True, text=True)
        if res.returncode != 0:
            log(f'  could not prepare the shared test demo (each mutant builds its own):\n'
                f'{res.stderr[-2000:]}')
    return root


def run_group(wd: Path, files: List[str], jobs: int, log,
              mutants: List[str] = (), demo: bool = False) -> Dict[str, Dict[str, dict]]:
    env = dict(os.environ, PYTHONHASHSEED='0', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1',
               CUDA_VISIBLE_DEVICES='')
    if demo:
        env['DENSEVLM_TEST_DEMO'] = str(shared_demo(wd, log))
    cmd = [sys.executable, '-m', 'mutmut', 'run', '--max-children', str(jobs), *mutants]
    with open(wd / 'mutmut.log', 'w') as out:
        proc = subprocess.run(cmd, cwd=wd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = (wd / 'mutmut.log').read_text(errors='replace')[-3000:]
        log(f'  mutmut run failed (exit {proc.returncode}); end of {wd / "mutmut.log"}:\n{tail}')
    return collect_mutmut(wd, files, log)


def save_results(wd: Path, results: Dict[str, Dict[str, dict]]) -> None:
    (wd / 'results.json').write_text(json.dumps(results))


def collect(wd: Path, files: List[str], log) -> Dict[str, Dict[str, dict]]:
    """Status (and diff, when not killed) of every mutant of ``files`` in a group's work dir;
    mutants that mutmut reports "not checked" (it forgets its results when its test selection
    changes on ``--resume``) keep the status saved by the last run in ``results.json``."""
    results = collect_mutmut(wd, files, log)
    saved = wd / 'results.json'
    if saved.is_file():
        old = json.loads(saved.read_text())
        for path, rows in results.items():
            for name, r in rows.items():
                if r['status'] == 'not checked' and name in old.get(path, {}):
                    rows[name] = old[path][name]
    return results


def collect_mutmut(wd: Path, files: List[str], log) -> Dict[str, Dict[str, dict]]:
    """Status (and diff, when not killed) of every mutant of ``files`` as mutmut has it."""
    res = subprocess.run([sys.executable, '-c', _COLLECT, *files], cwd=wd,
                         capture_output=True, text=True)
    marker = '@@MUTATION-JSON@@'
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith(marker)), None)
    if line is None:
        log(f'  could not read the results:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}')
        return {}
    return json.loads(line[len(marker):])


def summarize(results: Dict[str, Dict[str, dict]], equivalents: Dict[tuple, str]):
    """Per file: counts of mutants / killed (incl. timeouts) / survived / equivalent; the
    survivors not listed as equivalent."""
    rows, survivors = [], []
    for path, mutants in results.items():
        c = dict(mutants=len(mutants), killed=0, survived=0, equivalent=0)
        for name, r in mutants.items():
            if r['status'] == 'not checked':  # left out by --mutants
                c['mutants'] -= 1
                continue
            if r['status'] in ('killed', 'timeout', 'caught by type check'):
                c['killed'] += 1
            elif signature(path, name, r['diff']) in equivalents:
                c['equivalent'] += 1
            else:
                c['survived'] += 1
                survivors.append((path, name, r))
        rows.append((path, c))
    return rows, survivors


def stale_equivalents(results: Dict[str, Dict[str, dict]],
                      equivalents: Dict[tuple, str]) -> List[tuple]:
    """Equivalence entries of the files in ``results`` that match no surviving mutant any more
    (the code or the mutant changed): they should be removed or updated."""
    used = {signature(path, name, r['diff']) for path, mutants in results.items()
            for name, r in mutants.items()
            if r['status'] not in ('killed', 'timeout', 'caught by type check', 'not checked')}
    return [sig for sig in equivalents if sig[0] in results and sig not in used]


def score(c: dict) -> float:
    denom = c['mutants'] - c['equivalent']
    return 100.0 * c['killed'] / denom if denom else 100.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--groups', nargs='+', help='groups to run (default: all)')
    parser.add_argument('--jobs', type=int, help='mutants tested in parallel (default: config)')
    parser.add_argument('--work-dir', default=str(ROOT / 'work_dirs' / 'mutation'))
    parser.add_argument('--exclude-tests', nargs='*', default=[],
                        help='test files/folders left out (e.g. to measure a score before them)')
    parser.add_argument('--files', nargs='*', default=[],
                        help='only mutate the group files whose path contains one of these')
    parser.add_argument('--mutants', nargs='*', default=[],
                        help='only these mutant names (fnmatch patterns, e.g. "*Adapterǁdense__*")')
    parser.add_argument('--report', action='store_true',
                        help='only re-read the results in --work-dir (e.g. after editing the '
                             'equivalents list)')
    parser.add_argument('--resume', action='store_true',
                        help='keep the results in --work-dir, copy the current tests in and '
                             're-test the --mutants given (default: the survivors) '
                             'with the group\'s current test files')
    parser.add_argument('--config', default=str(CONFIG))
    parser.add_argument('--list', action='store_true', help='print groups and exit')
    parser.add_argument('--fail-under', type=float, default=None,
                        help='exit 1 when the total score is below this percentage')
    args = parser.parse_args(argv)

    cfg = load_config(Path(args.config))
    settings = cfg.get('settings', {})
    groups = cfg['groups']
    names = args.groups or [g for g in groups if not groups[g].get('optional')]
    unknown = [g for g in names if g not in groups]
    if unknown:
        parser.error(f'unknown groups {unknown}; known: {list(groups)}')
    if args.list:
        for g in names:
            print(f'[{g}]\n  files: {groups[g]["files"]}\n  tests: {groups[g]["tests"]}')
        return 0
    jobs = args.jobs or int(settings.get('jobs', 2))
    work = Path(args.work_dir).resolve()
    equivalents = load_equivalents()

    def log(msg):
        print(msg, flush=True)

    table, all_survivors, start, failed = [], [], time.time(), False
    for g in names:
        t0 = time.time()
        if args.report:  # re-read the results of an earlier run in the work dir
            wd = work / g
            files = [f for f in groups[g]['files'] if (wd / 'mutants' / (f + '.meta')).is_file()
                     and (not args.files or any(o in f for o in args.files))]
            if not files:
                log(f'[{g}] no earlier results in {wd}')
                continue
            results = collect(wd, files, log)
        elif args.resume and (work / g / 'mutants').is_dir():
            # keep mutmut's results; refresh the tests and re-test the --mutants given
            wd = work / g
            for dest in (wd / 'tests', wd / 'mutants' / 'tests'):
                shutil.copytree(ROOT / 'tests', dest, ignore=_ignore, dirs_exist_ok=True)
            mutated = [f for f in groups[g]['files'] if (wd / 'mutants' / (f + '.meta')).is_file()]
            files = [f for f in mutated if not args.files or any(o in f for o in args.files)]
            # test files added since the fresh run (and --exclude-tests) count too
            set_test_selection(wd, group_tests(groups[g], settings, args.exclude_tests))
            refresh_package(wd, mutated, log)
            before = collect(wd, files, log)
            names = list(args.mutants)
            if not names:  # re-test the survivors of the last run
                names = [n for rows in before.values() for n, r in rows.items()
                         if r['status'] not in ('killed', 'timeout', 'not checked')]
            log(f'[{g}] resuming in {wd}: re-testing {len(names) if not args.mutants else names}')
            results = (run_group(wd, files, jobs, log, names,
                                 demo=groups[g].get('share_demo', False))
                       if names else before)
            retested = lambda n: any(fnmatch.fnmatchcase(n, pat) for pat in names)  # noqa: E731
            unchecked = [n for rows in results.values() for n, r in rows.items()
                         if retested(n) and r['status'] == 'not checked']
            if unchecked:  # e.g. mutmut's stats pass failed: nothing was re-tested
                log(f'[{g}] ERROR: {len(unchecked)} re-tested mutants were not run (see '
                    f'{wd / "mutmut.log"}: a failing test stops mutmut\'s stats pass)')
                failed = True
            # mutmut forgets its results when its test selection changes: the mutants not
            # re-tested keep those of the earlier run
            for path, rows in results.items():
                for n, r in rows.items():
                    if (r['status'] == 'not checked' and not retested(n)
                            and n in before.get(path, {})):
                        rows[n] = before[path][n]
            save_results(wd, results)
        else:
            wd, files, tests = prepare(g, groups[g], settings, work, args.exclude_tests,
                                       args.files)
            missing = sorted(f for f in groups[g]['files'] if not (ROOT / f).is_file())
            log(f'[{g}] {len(files)} files, tests: {" ".join(tests)}'
                + (f' (missing files skipped: {missing})' if missing else ''))
            if not files or not tests:
                log(f'[{g}] nothing to run')
                continue
            for f in files:
                skipped = decorated_functions(ROOT / f)
                if skipped:
                    log(f'  not mutated (decorated) in {f}: {"; ".join(skipped)}')
            results = run_group(wd, files, jobs, log, args.mutants,
                                demo=groups[g].get('share_demo', False))
            save_results(wd, results)
            unchecked = sum(r['status'] == 'not checked' for rows in results.values()
                            for r in rows.values())
            if not results or (unchecked and not args.mutants):
                log(f'[{g}] ERROR: {unchecked} mutants were not tested (see '
                    f'{wd / "mutmut.log"}: a failing test stops mutmut\'s stats pass)')
                failed = True
        rows, survivors = summarize(results, equivalents)
        if not args.mutants:  # a partial run cannot tell which entries are unused
            for sig in stale_equivalents(results, equivalents):
                log(f'  stale equivalence entry (matches no survivor): {sig[0]} :: {sig[1]} '
                    f'{" / ".join(sig[2] + sig[3])}')
        table += [(g, p, c) for p, c in rows]
        all_survivors += survivors
        with open(wd / 'survivors.txt', 'w') as f:
            for path, name, r in survivors:
                f.write(f'# status: {r["status"]}\n{format_block(path, name, r["diff"])}\n'
                        f'{r["diff"]}\n\n')
        log(f'[{g}] done in {time.time() - t0:.0f} s')

    total = dict(mutants=0, killed=0, survived=0, equivalent=0)
    width = max([len(p) for _, p, _ in table] + [10])
    print('\nMutation score (killed / (mutants - equivalent)):')
    print(f'{"group":<16} {"module":<{width}} {"mutants":>7} {"killed":>7} {"survived":>8} '
          f'{"equiv.":>6} {"score":>7}')
    for g, p, c in table:
        for k in total:
            total[k] += c[k]
        print(f'{g:<16} {p:<{width}} {c["mutants"]:>7} {c["killed"]:>7} {c["survived"]:>8} '
              f'{c["equivalent"]:>6} {score(c):>6.1f}%')
    print(f'{"total":<16} {"":<{width}} {total["mutants"]:>7} {total["killed"]:>7} '
          f'{total["survived"]:>8} {total["equivalent"]:>6} {score(total):>6.1f}%')
    print(f'({time.time() - start:.0f} s, {jobs} parallel mutants)')
    if all_survivors:
        print(f'\n{len(all_survivors)} survivors not listed in {EQUIVALENTS.relative_to(ROOT)}:')
        for path, name, r in all_survivors:
            print(f'\n[{r["status"]}] {name}\n{r["diff"].strip()}')
    if args.fail_under is not None and score(total) < args.fail_under:
        return 1
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
