"""Clean-up after runs killed outright (SIGKILL, power loss), by the next run.

A killed run can leave a build folder ``.NAME.posgen-tmp-*`` or a parked dataset
``.NAME.posgen-old-*`` next to its target. :func:`recover` removes the first and restores
the second when the target is missing, but only once no live process owns it (its lock is
free, :mod:`posgen.store.lock`), in any PID namespace. Worked example, a run killed between
the two renames of a replacement::

    out/.ds.posgen-old-1a2b3c4d   (the previous dataset, parked)
    out/ds                        (absent)
    -> recover(out/ds) renames the parked dataset back to out/ds
"""

from __future__ import annotations

import os
import shutil
from contextlib import suppress
from pathlib import Path

from posgen.store.layout import OLD_TAG, TMP_TAG, hidden_siblings
from posgen.store.lock import claim
from posgen.store.targets import resolve_target


def leftovers(target: Path) -> list[Path]:
    """Temporary siblings of ``target`` left by runs that were killed (or still running)."""
    return hidden_siblings(target, (TMP_TAG, OLD_TAG))


def recover(target: Path) -> list[str]:
    """Clean up after killed runs; returns what was done, one line per leftover.

    Each leftover is first claimed (:func:`posgen.store.lock.claim`): one that a live
    process still owns (a running build, a dataset being replaced) is left alone, whatever
    its name says. A replaced dataset parked as ``.NAME.posgen-old-*`` is moved back when
    ``target`` is missing (the run died between its two renames); the rest is removed.
    With ``target`` a symbolic link, the leftovers next to the folder it names are seen too.
    """
    target = Path(target)
    actions = []
    names = dict.fromkeys([target, resolve_target(target) if target.is_symlink() else target])
    for name in names:
        for stale in leftovers(name):
            actions += _recover_one(stale, name)
    return actions


def _recover_one(stale: Path, target: Path) -> list[str]:
    with claim(stale) as state:
        if state == "gone":
            return []
        if state == "busy":
            return [f"left {stale} alone: a running process still owns it"]
        if state == "unknown":
            return [
                f"left {stale} alone: the file system has no locks, so whether a run still "
                "owns it is unknown; remove it by hand once no posgen run uses it"
            ]
        if OLD_TAG in stale.name and not os.path.lexists(target):
            os.rename(stale, target)
            return [f"restored {target} from {stale.name} (a run died while replacing it)"]
        _remove(stale)
    if os.path.lexists(stale):
        return [f"could not remove leftover {stale} of an interrupted run; remove it by hand"]
    return [f"removed leftover {stale} of an interrupted run"]


def _remove(path: Path) -> None:
    """Remove a leftover: a link or file is unlinked (never followed), a folder deleted."""
    if path.is_symlink() or not path.is_dir():
        with suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)
