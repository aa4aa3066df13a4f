"""Which folder a dataset target names, and whether it may be (re)created there.

A symlink ``--out`` is followed (:func:`resolve_target`): the dataset is built and replaced
where it points, and the link is kept. An existing folder is replaced only with
``overwrite``, and only when it is a posgen dataset (it holds ``posgen.json``) or empty.

>>> import tempfile
>>> check_target(Path(tempfile.mkdtemp()) / "new", overwrite=False)  # free: nothing raised
"""

from __future__ import annotations

import os
from pathlib import Path

from posgen.errors import UsageError
from posgen.store.layout import MANIFEST_NAME

MARKER = MANIFEST_NAME
"""The file that makes a folder a posgen dataset, one ``--overwrite`` may replace."""


class OutputExistsError(UsageError, FileExistsError):
    """The target exists and may not be replaced (a usage error, exit 2)."""

    def __str__(self) -> str:
        return " ".join(str(arg) for arg in self.args)


def resolve_target(target: Path) -> Path:
    """Where the dataset named ``target`` lives: ``target``, or the folder its symlink names.

    A symbolic link as ``--out`` is followed (a dangling one too: the folder is created
    where it points), so the link keeps pointing at the dataset and is never replaced by a
    folder or parked. A link that loops is refused.
    """
    target = Path(target)
    if not target.is_symlink():
        return target
    real = Path(os.path.realpath(target))
    if real.is_symlink() or real.parent.is_symlink():
        raise OutputExistsError(f"{target} is a symbolic link that loops; nothing was written")
    return real


def check_target(target: Path, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` unless ``target`` may be (re)created."""
    target = resolve_target(target)
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a folder; nothing was written")
    if not overwrite:
        raise OutputExistsError(f"{target} exists; pass --overwrite to replace it")
    if any(target.iterdir()) and not (target / MARKER).is_file():
        raise OutputExistsError(
            f"{target} is not a posgen dataset (no {MARKER}); refusing to replace it"
        )
