"""Checks of hyper-parameters as they arrive from configs and ``--cfg-options``.

A value from a config can be a string (``theta='0.3'``), NaN, a bool where a number is meant, or
out of range; each check raises ``ValueError`` naming the owner, the input, what is allowed and
how to write it, instead of failing later (or never) with a wrong number.
"""
import math
from numbers import Integral, Real
from typing import Any, Optional, Sequence

__all__ = ['check_number', 'check_bool', 'check_choice']


def _interval(low: Optional[float], high: Optional[float], low_open: bool,
              high_open: bool) -> str:
    left = '(' if low_open or low is None else '['
    right = ')' if high_open or high is None else ']'
    return f'{left}{"-inf" if low is None else low}, {"inf" if high is None else high}{right}'


def check_number(value: Any, name: str, owner: str, *, low: Optional[float] = None,
                 high: Optional[float] = None, low_open: bool = False, high_open: bool = False,
                 integer: bool = False, example: Any = None) -> Any:
    """Return ``value`` (``float``; ``int`` with ``integer``) when it is a finite number in range.

    Args:
        value: the configured value.
        name: its argument name, as a user writes it in a config.
        owner: the class (or function) that takes it.
        low / high: bounds (``None``: unbounded); ``low_open`` / ``high_open`` exclude them.
        integer: require an integer.
        example: a valid value shown in the message (the default, usually).

    Raises:
        ValueError: a string, bool, NaN/inf or other non-number, a non-integer where an integer is
            needed, or a value outside the range; the message names ``owner``, ``name``, the
            allowed range and an example.
    """
    kind = 'an integer' if integer else 'a number'
    interval = _interval(low, high, low_open, high_open)
    fix = f'write a {"whole " if integer else ""}number in {interval} without quotes' + (
        f', e.g. {name}={example!r}' if example is not None else '')
    got = f'{value!r} ({type(value).__name__})'
    numeric = isinstance(value, Integral) if integer else isinstance(value, Real)
    if isinstance(value, bool) or not numeric:
        hint = ' (a quoted value in a config or in --cfg-options stays a string)' \
            if isinstance(value, str) else ''
        raise ValueError(f'{owner}: {name} must be {kind} in {interval}, got {got}{hint}; {fix}.')
    if not integer and not math.isfinite(float(value)):
        raise ValueError(f'{owner}: {name} must be a finite number in {interval}, got {got}; '
                         f'{fix}.')
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        raise ValueError(f'{owner}: {name} must be {kind} in {interval}, got {got}; {fix}.')
    return int(value) if integer else float(value)


def check_bool(value: Any, name: str, owner: str) -> bool:
    """Return ``value`` when it is a bool (not ``'False'``, which is truthy, nor ``0``/``1``)."""
    if not isinstance(value, bool):
        raise ValueError(f'{owner}: {name} must be True or False, got {value!r} '
                         f'({type(value).__name__}); write {name}=True or {name}=False without '
                         'quotes.')
    return value


def check_choice(value: Any, name: str, owner: str, choices: Sequence[Any]) -> Any:
    """Return ``value`` when it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f'{owner}: {name} must be one of {list(choices)}, got {value!r}; '
                         f'e.g. {name}={choices[0]!r}.')
    return value
