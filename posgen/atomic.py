"""Folders that appear only when complete, and never replace anything by accident.

:func:`atomic_folder` builds into a hidden sibling and renames it into place at the end;
on any error (or signal turned into an exception) the sibling is removed and the target
is untouched. With ``overwrite`` an existing dataset is replaced only after the new one
is complete, and only when it is a posgen dataset (it holds ``posgen.json``) or empty.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MARKER = "posgen.json"
TMP_TAG = ".posgen-tmp-"
OLD_TAG = ".posgen-old-"


class OutputExistsError(FileExistsError):
    """The target exists and may not be replaced."""


def check_target(target: Path, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` unless ``target`` may be (re)created."""
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


def leftovers(target: Path) -> list[Path]:
    """Temporary siblings of ``target`` left by runs that were killed."""
    parent = target.parent
    if not parent.is_dir():
        return []
    prefixes = (f".{target.name}{TMP_TAG}", f".{target.name}{OLD_TAG}")
    return sorted(p for p in parent.iterdir() if p.name.startswith(prefixes))


def recover(target: Path) -> list[str]:
    """Clean up after killed runs; returns what was done, one line per leftover.

    A replaced dataset parked as ``.NAME.posgen-old-*`` is moved back when ``target`` is
    missing (the run died between its two renames); build folders are removed.
    """
    actions = []
    for stale in leftovers(target):
        if OLD_TAG in stale.name and not target.exists():
            os.rename(stale, target)
            actions.append(f"restored {target} from {stale.name}")
        else:
            shutil.rmtree(stale, ignore_errors=True)
            actions.append(f"removed leftover {stale}")
    return actions


@contextmanager
def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh build folder; on success it becomes ``target``."""
    target = Path(target)
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    build = target.parent / f".{target.name}{TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    build.mkdir()
    try:
        yield build
        _fsync_tree(build)
        check_target(target, overwrite)
        if target.exists():
            old = target.parent / f".{target.name}{OLD_TAG}{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
            os.rename(build, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
