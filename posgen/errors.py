"""posgen's errors: three kinds, each with its exit status, and readable validation lines.

- :class:`UsageError` (exit 2): bad input the user can fix (a spec, a flag, a path that is
  not a dataset, predictions that do not fit);
- :class:`DataError` (exit 1): data that fails its integrity check (a damaged file, an
  edited manifest);
- :class:`RunError` (exit 1): the run itself failed (a write, a refused publish).

The CLI maps every :class:`PosgenError` to ``error: ...`` lines and its ``exit_code`` in one
place (:class:`posgen.cli.PosgenGroup`).

>>> from pydantic import ValidationError
>>> from posgen.spec import TaskSpec
>>> try:
...     TaskSpec(task="cot", modulus=1)
... except ValidationError as error:
...     print(problem_lines(error)[0])
modulus: Input should be greater than or equal to 2 (given: 1)
>>> UsageError("no such config").exit_code, DataError("bad bytes").lines
(2, ['bad bytes'])
"""

from __future__ import annotations

import reprlib
from typing import Any

from pydantic import ValidationError

SHOWN_CHARS = 200
"""Longest text of one value shown in an error line."""

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 40, 40, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4


def shown(text: object, limit: int = SHOWN_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters, undecodable bytes escaped.

    >>> shown("a" * 300, 10)
    'aaaaaaa...'
    >>> shown("x\\udcff")
    'x\\\\xff'
    """
    value = str(text)
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 3] + "..."


def not_utf8(raw: bytes, error: UnicodeDecodeError) -> str:
    """Where ``raw`` stops being UTF-8, for an error line.

    >>> try:
    ...     b"caf\\xe9".decode("utf-8")
    ... except UnicodeDecodeError as error:
    ...     print(not_utf8(b"caf\\xe9", error))
    not UTF-8 (byte 3 is b'\\xe9')
    """
    return f"not UTF-8 (byte {error.start} is {raw[error.start : error.start + 1]!r})"


def shown_value(value: Any) -> str:
    """A bounded ``repr`` of any input: never walks more than a few levels and items.

    >>> shown_value([[[[[1]]]]] * 1000)
    '[[[[...]]], [[[...]]], [[[...]]], [[[...]]], ...]'
    """
    return shown(_REPR.repr(value), 60)


class PosgenError(Exception):
    """Base of every error posgen reports as ``error:`` lines (never a traceback)."""

    exit_code = 1
    headline: str | None = None
    """A line printed before :attr:`lines` (e.g. which folder is damaged), if any."""

    @property
    def lines(self) -> list[str]:
        """One line per problem."""
        return [" ".join(line.split()) for line in str(self).splitlines() if line.strip()]

    @property
    def printed(self) -> list[str]:
        """What the CLI prints, one ``error:`` line each: the headline (if any) joined to a
        single problem, or on a line of its own before several."""
        lines = self.lines
        if self.headline is None:
            return lines
        if len(lines) == 1:
            return [f"{lines[0]} ({self.headline})"]
        return [self.headline, *lines]


class UsageError(PosgenError):
    """Bad input: exit status 2."""

    exit_code = 2


class DataError(PosgenError):
    """Data that fails its integrity check: exit status 1."""


class RunError(PosgenError):
    """The run failed (writing, publishing): exit status 1."""


def _location(loc: tuple[Any, ...]) -> str:
    return shown(".".join(str(part) for part in loc), 120) or "spec"


def problem_lines(error: ValidationError) -> list[str]:
    """One line per problem: ``field.path: message (given: value)``."""
    lines = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        given = item.get("input")
        line = f"{_location(item['loc'])}: {message}"
        if item["type"] not in ("missing",) and not isinstance(given, dict):
            line += f" (given: {shown_value(given)})"
        lines.append(" ".join(line.split()))
    return lines
