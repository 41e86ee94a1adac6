"""Reading the text and JSON files users give (vocabularies, class lists, annotation files).

A file saved by a Windows editor may be UTF-16 with a byte-order mark, or UTF-8 with one (which
``json.load`` refuses: "Unexpected UTF-8 BOM"); a zero-byte annotation file makes ``json.load``
fail with "Expecting value: line 1 column 1 (char 0)" and no file name. These helpers decode by
the byte-order mark (UTF-8 without one) and raise errors that name the file, what it is for and
how to fix it.
"""
import codecs
import contextlib
import json
import os
import os.path as osp
from typing import Any, Iterator

__all__ = ['decode_text', 'read_text_file', 'parse_json', 'load_json_file', 'check_nonempty_file',
           'json_errors_name_file']

# the longest marks first: the UTF-32-LE mark starts with the UTF-16-LE one
_BOMS = [(codecs.BOM_UTF32_LE, 'utf-32-le'), (codecs.BOM_UTF32_BE, 'utf-32-be'),
         (codecs.BOM_UTF8, 'utf-8'), (codecs.BOM_UTF16_LE, 'utf-16-le'),
         (codecs.BOM_UTF16_BE, 'utf-16-be')]

_SAVE_AS_UTF8 = ('save it as UTF-8 (e.g. `iconv -f <its encoding> -t utf-8 IN > OUT`, or "UTF-8" '
                 'in the editor\'s save dialog)')


def decode_text(data: bytes, path: str, what: str = 'file') -> str:
    """Decode a file's bytes: by its byte-order mark (UTF-8/16/32), else as UTF-8.

    Raises:
        ValueError: naming ``what`` and ``path``: NUL bytes without a byte-order mark (UTF-16/32
            saved without one), or bytes that are not UTF-8 (e.g. Latin-1 / Windows-1252).
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(encoding)
            except UnicodeDecodeError as exc:
                raise ValueError(f'{what} {path!r} starts with a {encoding} byte-order mark but is '
                                 f'not valid {encoding} (byte {exc.start + len(bom)}); '
                                 f'{_SAVE_AS_UTF8}.') from None
    if b'\x00' in data:
        raise ValueError(f'{what} {path!r} contains NUL bytes: it looks like UTF-16 or UTF-32 '
                         f'saved without a byte-order mark; {_SAVE_AS_UTF8}.')
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as exc:
        raise ValueError(f'{what} {path!r} is not UTF-8 (byte {exc.start}: '
                         f'{data[exc.start:exc.start + 4]!r}); {_SAVE_AS_UTF8}.') from None


def check_nonempty_file(path: str, what: str = 'file') -> None:
    """Raise ``FileNotFoundError`` / ``ValueError`` naming ``path`` when it is missing, a folder or
    zero bytes long."""
    if not osp.exists(path):
        raise FileNotFoundError(f'{what} not found: {path!r}')
    if osp.isdir(path):
        raise IsADirectoryError(f'{what} {path!r} is a folder; give the file inside it')
    if osp.getsize(path) == 0:
        raise ValueError(_empty(path, what, 0))


def _empty(path: str, what: str, size: int) -> str:
    return (f'{what} {path!r} is empty ({size} bytes): the download, copy or conversion that '
            'wrote it did not finish. Write or download it again.')


def read_text_file(path: str, what: str = 'file') -> str:
    """The text of a local file (see :func:`decode_text`); a missing or empty file raises."""
    check_nonempty_file(path, what)
    with open(path, 'rb') as f:
        return decode_text(f.read(), path, what)


def parse_json(data: bytes, path: str, what: str = 'JSON file') -> Any:
    """Parse JSON bytes; an empty file or a syntax error raises ``ValueError`` naming ``path``."""
    if not data.strip():
        raise ValueError(_empty(path, what, len(data)))
    text = decode_text(data, path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _invalid_json(path, what, exc) from None


def _invalid_json(path: str, what: str, exc: json.JSONDecodeError) -> ValueError:
    return ValueError(f'{what} {path!r} is not valid JSON: {exc.msg} at line {exc.lineno} column '
                      f'{exc.colno}; the file may be truncated (write or download it again) or '
                      'not JSON.')


def load_json_file(path: str, what: str = 'JSON file') -> Any:
    """Read and parse a local JSON file (see :func:`parse_json`)."""
    check_nonempty_file(path, what)
    with open(path, 'rb') as f:
        return parse_json(f.read(), path, what)


@contextlib.contextmanager
def json_errors_name_file(path: str, what: str = 'annotation file') -> Iterator[None]:
    """For JSON read by a third-party API (pycocotools, lvis): check the file first, and re-raise
    its decoding errors with the file's name."""
    path = os.fspath(path)
    if '://' not in path:  # a local file (remote ones are fetched by the API)
        check_nonempty_file(path, what)
    try:
        yield
    except json.JSONDecodeError as exc:
        raise _invalid_json(path, what, exc) from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f'{what} {path!r} is not UTF-8 (byte {exc.start}); '
                         f'{_SAVE_AS_UTF8}.') from exc
