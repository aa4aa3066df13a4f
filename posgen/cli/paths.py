"""Path arguments every command shares: names the file system and the data formats can hold.

:class:`PathArg` is ``click.Path`` plus two checks made before any work starts: the path
must be UTF-8 (Parquet, Arrow and JSON store names as UTF-8; bytes that are not are refused,
not half-written) and no part of it may be longer than the file system allows.

>>> path_problem("out/" + "a" * 300)
'has a name of 300 bytes; the file system allows 255'
>>> path_problem("out/x\\udcff")
"is not UTF-8 (byte 5 is b'\\\\xff')"
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from posgen.errors import not_utf8, shown

DEFAULT_NAME_MAX = 255


def name_max(path: Path) -> int:
    """Longest file name (bytes) in the nearest existing folder of ``path``."""
    folder = path.parent if str(path.parent) else Path(".")
    for candidate in (folder, *folder.parents):
        try:
            return os.pathconf(candidate, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return DEFAULT_NAME_MAX


def path_problem(value: str) -> str | None:
    """Why ``value`` cannot name a file posgen reads or writes, or ``None``."""
    raw = os.fsencode(value)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"is {not_utf8(raw, error)}"
    path = Path(value)
    limit = name_max(path)
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            return f"has a name of {len(os.fsencode(part))} bytes; the file system allows {limit}"
    return None


class PathArg(click.Path):
    """``click.Path`` that also refuses non-UTF-8 paths and over-long names (usage error)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str | os.PathLike) and str(value) != "-":
            problem = path_problem(os.fspath(value))
            if problem is not None:
                self.fail(f"'{shown(os.fspath(value), 60)}' {problem}", param, ctx)
        return super().convert(value, param, ctx)
