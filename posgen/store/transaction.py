"""Dataset folders that appear only when complete, and never replace anything by accident.

:func:`atomic_folder` builds into a hidden sibling ``.NAME.posgen-tmp-RUNID`` that its run
owns (locks, :mod:`posgen.store.lock`) and renames it into place at the end; on any error,
or on SIGTERM, SIGINT or SIGHUP (turned into :class:`~posgen.signals.Interrupted` while the
build runs), the sibling is removed and the target is untouched. With ``overwrite`` an
existing dataset (:func:`~posgen.store.targets.check_target`) is replaced only after the
new one is complete: the two folders are exchanged in one step where the system can
(Linux), else the old one is parked as ``.NAME.posgen-old-XXXX`` and the build renamed in;
then the old one is removed. Signals that arrive meanwhile are held back until the target
is complete. Leftovers of killed runs are cleaned up first (:mod:`posgen.store.recovery`).

>>> import tempfile
>>> target = Path(tempfile.mkdtemp()) / "ds"
>>> with atomic_folder(target) as build:
...     _ = (build / "posgen.json").write_text("{}")
>>> [p.name for p in target.iterdir()]
['posgen.json']
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from posgen import signals
from posgen.store.layout import OLD_TAG, TMP_TAG, hidden_sibling
from posgen.store.lock import fresh_folder, owned
from posgen.store.recovery import recover
from posgen.store.rename import exchange, fsync_dir, fsync_tree, rename_new
from posgen.store.targets import OutputExistsError, check_target, resolve_target


@contextmanager
def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh build folder, owned (locked) by this process; on success it becomes
    ``target`` (the folder a symlink ``target`` names)."""
    target = resolve_target(Path(target))
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    build, owner = None, -1
    try:
        with signals.deferred():  # a signal now waits until the folder has a name
            build, owner = fresh_folder(lambda: hidden_sibling(target, TMP_TAG, pid=False))
        yield build
        fsync_tree(build)
        check_target(target, overwrite)
        with signals.deferred(completed=True):
            _commit(build, target)
    except BaseException:
        with signals.held():  # a second Ctrl-C must not stop the clean-up half-way
            if build is not None and os.path.lexists(build):
                shutil.rmtree(build, ignore_errors=True)
            if owner >= 0:
                os.close(owner)
            owner = -1
            recover(target)  # puts a parked dataset back if the commit failed half-way
        raise
    finally:
        if owner >= 0:
            os.close(owner)


def _commit(build: Path, target: Path) -> None:
    """Put ``build`` at ``target``; a dataset there is replaced whole and then deleted.

    Where the system can (Linux ``renameat2``), the two folders are exchanged in one step,
    so ``target`` is never missing; elsewhere the old one is parked as
    ``.NAME.posgen-old-*`` first. Either way the old dataset stays locked by this run
    until it is deleted, so no other run restores or removes it meanwhile.
    """
    if not os.path.lexists(target):
        try:
            rename_new(build, target)
        except FileExistsError as error:
            raise OutputExistsError(
                f"{target} appeared while the dataset was built; it was kept"
            ) from error
        fsync_dir(target.parent)
        return
    with owned(target):
        if exchange(build, target):
            old = build  # the old dataset now sits at the build folder's name
        else:
            old = hidden_sibling(target, OLD_TAG, pid=False)
            os.rename(target, old)
            os.rename(build, target)
        fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
