"""Every ``--option`` the docs give a ``tools/`` script is an option of that script's argparse
parser (read without running the tool; ``dist_*.sh`` / ``slurm_*.sh`` pass theirs to
``train.py`` / ``test.py``)."""
from pathlib import Path

import docs_refs as refs
import pytest


@pytest.fixture(scope='module')
def commands():
    basenames = refs.tool_files()
    return [(refs.rel(code.file), line, tool, options)
            for path in refs.markdown_files() for code in refs.parse(path).code
            for line, tool, options in refs.tool_commands(code, basenames)]


def test_every_tool_option_in_the_docs_exists(commands):
    parsers, wrong = {}, []
    with_options = [c for c in commands if c[3]]
    assert len(with_options) > 30
    for doc, line, tool, options in with_options:
        target = refs.target_tool(tool)
        if not (refs.REPO / target).is_file():
            wrong.append(f'{doc}:{line}: {tool} does not exist')
            continue
        if not target.endswith('.py'):
            wrong.append(f'{doc}:{line}: {tool} takes no options, the docs give it {sorted(options)}')
            continue
        if target not in parsers:
            parsers[target] = refs.parser_options(refs.tool_parser(target))
        unknown = sorted(options - parsers[target])
        if unknown:
            wrong.append(f'{doc}:{line}: {tool}: {unknown} not among {sorted(parsers[target])}')
    assert not wrong, 'tool options named in the docs that the tools do not have:\n' + '\n'.join(wrong)


def test_every_tool_named_in_the_docs_exists(commands):
    missing = sorted({f'{doc}:{line}: {tool}' for doc, line, tool, _ in commands
                      if not (refs.REPO / tool).is_file()})
    assert not missing, '\n'.join(missing)


def block(text: str) -> refs.CodeText:
    return refs.CodeText(Path('x.md'), 10, text, True)


def test_command_rule():
    names = refs.tool_files()
    found = list(refs.tool_commands(block(
        'python tools/train.py CFG \\\n    --work-dir w --amp  # not --an-option\n'
        'bash tools/dist_train.sh CFG 4 --auto-scale-lr | tee --log\n'
        'python tools/demo.py IMG [IMAGE|DIR] (--config C | --model M)\n'
        '    [--boxes "x1,y1;..." | --boxes f.json] [--out DIR]\n'
        'python tools/test.py C K --out a.pkl; echo --nope && tools/text_embeddings.py --device cpu\n'),
        names))
    assert found == [(10, 'tools/train.py', {'--work-dir', '--amp'}),
                     (12, 'tools/dist_train.sh', {'--auto-scale-lr'}),
                     (13, 'tools/demo.py', {'--config', '--model', '--boxes', '--out'}),
                     (15, 'tools/test.py', {'--out'}),
                     (15, 'tools/text_embeddings.py', {'--device'})]
    span = refs.CodeText(Path('x.md'), 3, 'test.py CONFIG CKPT [--out] [--show-dir]', False)
    assert list(refs.tool_commands(span, names)) == [(3, 'tools/test.py', {'--out', '--show-dir'})]
    assert refs.target_tool('tools/slurm_test.sh') == 'tools/test.py'


def test_parsers_are_read_without_running_the_tool():
    options = refs.parser_options(refs.tool_parser('tools/train.py'))
    assert {'--work-dir', '--resume', '--amp', '--auto-scale-lr', '--no-strict', '--cfg-options',
            '--launcher'} <= options
    assert '--out' not in options
    # a tool whose main() takes no argv and reads sys.argv itself
    assert '--check-model' in refs.parser_options(
        refs.tool_parser('tools/model_converters/eva_clip_to_open_clip.py'))
