"""Dump every config's resolved content, or compare the configs with such a dump.

    python tools/analysis/dump_configs.py --out work_dirs/configs_resolved.json.gz
    python tools/analysis/dump_configs.py --compare work_dirs/configs_resolved.json.gz

A restructure of ``configs/`` (new ``_base_`` files, overrides moved) must not change what any
config computes: dump before, restructure, compare. Every config outside the ``_base_`` folders is
loaded with ``Config.fromfile(path).to_dict()`` and normalised: ``_base_`` and ``filename`` keys
dropped (where the bases live is what a restructure changes), absolute paths inside the repository
written relative to it, tuples kept apart from lists, keys sorted. ``--compare`` prints every
added, removed or changed config and key path and exits with status 1 when there is any.
"""
import argparse
import gzip
import json
import os.path as osp
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # configs' custom_imports name densevlm_mm modules
DROPPED_KEYS = ('_base_', 'filename')
FORMAT = 1


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--out', help='write the dump here (.json, or .json.gz compressed)')
    what.add_argument('--compare', metavar='DUMP', help='compare the configs with this dump')
    parser.add_argument('--configs', default=str(ROOT / 'configs'),
                        help='the config folder (default: the repository\'s configs/)')
    parser.add_argument('--max-lines', type=int, default=40,
                        help='differences printed per config (default 40)')
    return parser.parse_args(argv)


def config_files(folder: str) -> List[Path]:
    """The configs under ``folder`` a user runs: every ``.py`` outside ``_base_`` folders."""
    return sorted(p for p in Path(folder).rglob('*.py')
                  if '_base_' not in p.relative_to(folder).parts)


def normalise(obj: Any, top: bool = True) -> Any:
    """``obj`` as JSON-ready data that keeps what a restructure could change by mistake."""
    if isinstance(obj, dict):
        return {str(k): normalise(v, False) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))
                if not (top and k in DROPPED_KEYS)}
    if isinstance(obj, tuple):
        return {'__tuple__': [normalise(v, False) for v in obj]}
    if isinstance(obj, list):
        return [normalise(v, False) for v in obj]
    if isinstance(obj, str):
        return osp.relpath(obj, ROOT) if osp.isabs(obj) and obj.startswith(str(ROOT)) else obj
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    return {'__type__': f'{type(obj).__module__}.{type(obj).__qualname__}', 'repr': repr(obj)}


def resolved(path: Path) -> dict:
    """The normalised ``Config.fromfile(path).to_dict()``."""
    from mmengine.config import Config
    return normalise(Config.fromfile(str(path)).to_dict())


def dump(folder: str) -> dict:
    """``{'format': 1, 'configs': {relative path: resolved config}}`` of every config."""
    return {'format': FORMAT,
            'configs': {p.relative_to(folder).as_posix(): resolved(p) for p in config_files(folder)}}


def write(data: dict, out: str) -> None:
    text = json.dumps(data, sort_keys=True, indent=1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if out.endswith('.gz'):
        with gzip.open(out, 'wt', encoding='utf-8', compresslevel=9) as f:
            f.write(text)
    else:
        Path(out).write_text(text, encoding='utf-8')


def read(path: str) -> dict:
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt', encoding='utf-8') as f:
        data = json.load(f)
    if data.get('format') != FORMAT:
        raise ValueError(f'{path}: not a config dump of format {FORMAT} (written by '
                         f'tools/analysis/dump_configs.py --out)')
    return data


def differences(old: Any, new: Any, where: str = '') -> List[str]:
    """Every key path where ``new`` differs from ``old``, as ``path: old -> new`` lines."""
    if isinstance(old, dict) and isinstance(new, dict) and not (
            '__tuple__' in old) ^ ('__tuple__' in new):
        out = []
        for key in sorted(set(old) | set(new)):
            path = f'{where}.{key}' if where else key
            if key not in new:
                out.append(f'{path}: removed (was {json.dumps(old[key])[:80]})')
            elif key not in old:
                out.append(f'{path}: added ({json.dumps(new[key])[:80]})')
            else:
                out += differences(old[key], new[key], path)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new))
                for d in differences(a, b, f'{where}[{i}]')]
    if type(old) is not type(new) or old != new:
        return [f'{where or "<config>"}: {json.dumps(old)[:80]} -> {json.dumps(new)[:80]}']
    return []


def compare(before: dict, after: dict, max_lines: int = 40) -> List[str]:
    """Report lines of the configs that differ between two dumps (empty: none)."""
    report = []
    old, new = before['configs'], after['configs']
    for name in sorted(set(old) | set(new)):
        if name not in new:
            report.append(f'{name}: the config is gone')
        elif name not in old:
            report.append(f'{name}: a new config (not in the dump)')
        else:
            lines = differences(old[name], new[name])
            report += [f'{name}: {line}' for line in lines[:max_lines]]
            if len(lines) > max_lines:
                report.append(f'{name}: ... {len(lines) - max_lines} more differences')
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    current = dump(args.configs)
    count = len(current['configs'])
    if args.out:
        write(current, args.out)
        print(f'wrote {count} resolved configs to {args.out} ({Path(args.out).stat().st_size:,} bytes)')
        return 0
    report = compare(read(args.compare), current, args.max_lines)
    for line in report:
        print(line)
    changed = len({line.split(':', 1)[0] for line in report})
    print(f'{count} configs compared with {args.compare}: '
          + (f'{changed} differ' if report else 'all identical'))
    return 1 if report else 0


if __name__ == '__main__':
    sys.exit(main())
