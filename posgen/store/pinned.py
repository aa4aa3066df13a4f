"""Readers see one dataset: the old one or the new one, never files of both.

``posgen generate --overwrite`` replaces a dataset folder whole (:mod:`posgen.store.transaction`),
but a reader that takes seconds (validate, load) could read the manifest of the old folder
and files of the new one. :func:`read_whole` runs a read with the folder pinned: a
descriptor of the folder is held (so its identity cannot be reused), and when the path
names another folder at the end of the read, the read saw a replacement and is run again
on the new dataset. A read whose folder stayed the same saw only that folder.

>>> import tempfile
>>> from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> read_whole(root, lambda: sorted(p.name for p in root.iterdir()))
[]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from posgen.errors import RunError

T = TypeVar("T")
ATTEMPTS = 3
"""Reads tried before giving up on a folder that is replaced again and again."""


class DatasetReplaced(RunError):
    """The folder was replaced during every attempt to read it (a failed run, exit 1)."""


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


def _still(root: Path, pinned: tuple[int, int]) -> bool:
    try:
        return _identity(os.stat(root)) == pinned
    except OSError:
        return False


def read_whole(root: str | Path, read: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """``read()`` of the dataset folder ``root``, run again if ``root`` was replaced meanwhile.

    An error raised by a read that saw a replacement is dropped with that read; raises
    :class:`DatasetReplaced` after ``attempts`` replaced reads. A ``root`` that is not a
    folder is read once, as it is.
    """
    root = Path(root)
    for _ in range(attempts):
        try:
            fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return read()
        try:
            pinned = _identity(os.fstat(fd))
            try:
                result = read()
            except Exception:
                if _still(root, pinned):
                    raise
                continue
            if _still(root, pinned):
                return result
        finally:
            os.close(fd)
    raise DatasetReplaced(
        f"{root} was replaced {attempts} times while being read (a run is rewriting it); "
        "nothing was checked: run again once it is done"
    )
