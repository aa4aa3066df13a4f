"""Files and folders that appear only when complete, and never replace anything by accident.

:func:`durable_file` and :func:`write_atomically` write one file: to a hidden temporary
sibling, fsynced, then renamed over the name (readers see the old file or the new one).

:func:`atomic_folder` builds into a hidden sibling ``.NAME.posgen-tmp-RUNID`` that its run
owns (locks, :mod:`posgen.store.lock`) and renames it into place at the end; on any error,
or on SIGTERM, SIGINT or SIGHUP (turned into :class:`Interrupted` while the build runs),
the sibling is removed and the target is untouched. With ``overwrite`` an existing dataset
is replaced only after the new one is complete, and only when it is a posgen dataset (it
holds ``posgen.json``) or empty: the two folders are exchanged in one step where the system
can (Linux), else the old one is parked as ``.NAME.posgen-old-XXXX`` and the build renamed
in; then the old one is removed. Signals that arrive meanwhile are held back until the
target is complete. A symlink ``--out`` is followed (:func:`resolve_target`): the dataset
is built and replaced where it points, and the link is kept.

A run killed outright (SIGKILL, power loss) can leave a build folder or a parked dataset;
:func:`recover` (called by the next run) removes the first and restores the second when
the target is missing, but only once no live process owns it (its lock is free), in any
PID namespace. Worked example, a run killed between the two renames::

    out/.ds.posgen-old-1a2b3c4d   (the previous dataset, parked)
    out/ds                        (absent)
    -> recover(out/ds) == ["restored out/ds from .ds.posgen-old-1a2b3c4d"]
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import signal
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from posgen.errors import RunError, UsageError
from posgen.signals import CAUGHT_SIGNALS, Interrupted
from posgen.store.layout import (
    MANIFEST_NAME,
    OLD_TAG,
    TMP_TAG,
    hidden_sibling,
    hidden_siblings,
    temporaries_of,
    temporary_name,
)
from posgen.store.libc import function
from posgen.store.lock import claim, fresh_file, fresh_folder, owned, remove_unowned

MARKER = MANIFEST_NAME


class OutputExistsError(UsageError, FileExistsError):
    """The target exists and may not be replaced (a usage error, exit 2)."""

    def __str__(self) -> str:
        return " ".join(str(arg) for arg in self.args)


class WriteFailed(RunError, OSError):
    """Writing one file of a build failed; ``path`` is where it would have ended up.

    >>> str(WriteFailed(Path("ds/posgen.json"), OSError(28, "No space left on device")))
    'writing ds/posgen.json failed: No space left on device'
    """

    def __init__(self, path: Path, error: OSError) -> None:
        reason = os.strerror(error.errno) if error.errno else str(error)
        super().__init__(error.errno, f"writing {path} failed: {reason}")
        self.path = path
        self.reason = error

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple[type[WriteFailed], tuple[Path, OSError]]:
        # raised in worker processes too: rebuild from (path, error), not OSError's args
        return (WriteFailed, (self.path, self.reason))


class HashingFile:
    """A write-only file that hashes and counts what passes through (no re-read)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.digest, self.size, self.closed = handle, hashlib.sha256(), 0, False

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False


@contextmanager
def durable_file(path: Path) -> Iterator[HashingFile]:
    """A sink for the bytes of ``path``: hashed as written, fsynced, then renamed into place.

    The bytes go to a temporary sibling, so ``path`` only ever holds a complete file. An
    ``OSError`` (disk full, file too large) becomes :class:`WriteFailed` naming ``path``;
    on any failure the temporary file is removed. A symbolic link is followed: the file it
    names is replaced, never the link. A device or pipe (``/dev/stdout``, a FIFO) cannot be
    replaced and is written in place. The temporary is locked by this process while it
    writes (:mod:`posgen.store.lock`): unfinished copies left by killed writers are
    removed, those of live writers left alone.
    """
    path = Path(path)
    target, streamed = write_target(path)
    if streamed:
        try:
            with open(target, "wb") as handle:
                yield HashingFile(handle)
        except OSError as error:
            raise WriteFailed(path, error) from error
        return
    temporary = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in temporaries_of(target):
            remove_unowned(stale)
        temporary, fd = fresh_file(lambda: temporary_name(target))
        with open(fd, "wb") as handle:
            sink = HashingFile(handle)
            yield sink
            handle.flush()
            os.fsync(handle.fileno())  # durable before it gets its name
            os.replace(temporary, target)  # while still locked: no one removes it meanwhile
    except OSError as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise WriteFailed(path, error) from error
    except BaseException:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise


def write_target(path: Path) -> tuple[Path, bool]:
    """Where the bytes of ``path`` go, and whether they stream (a device or pipe).

    Links are resolved, so replacing ``link.json -> real.json`` replaces ``real.json``.

    >>> write_target(Path("/dev/null"))
    (PosixPath('/dev/null'), True)
    """
    try:
        mode = os.stat(path).st_mode  # follows links
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    if mode is not None and not stat.S_ISREG(mode):
        return path, True  # opened through the link, as the shell would
    return (Path(os.path.realpath(path)) if path.is_symlink() else path), False


def write_atomically(path: Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` at once (see :func:`durable_file`); returns ``path``."""
    with durable_file(Path(path)) as sink:
        sink.write(data)
    return Path(path)


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


class _SignalGuard:
    """Turn SIGINT/SIGTERM/SIGHUP into :class:`Interrupted`, or hold them while deferring."""

    def __init__(self) -> None:
        self.deferring = False
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        # Remembered as well as raised: Python swallows exceptions raised inside __del__
        # and weakref callbacks, where a handler can run, so the commit checks it again.
        self.received = self.received or signum
        if not self.deferring:
            raise Interrupted(signum)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # handlers can only be set from the main thread; errors still clean up
        for signum in CAUGHT_SIGNALS:
            self.previous[signum] = signal.signal(signum, self.handle)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    @contextmanager
    def deferred(self, completed: bool = True) -> Iterator[None]:
        """Hold signals back for the duration; raise the first one received, before or after
        (``completed``: whether the target is complete once the block has run)."""
        if self.received is not None:
            raise Interrupted(self.received)
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.received is not None:
            raise Interrupted(self.received, completed=completed)


@contextmanager
def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh build folder, owned (locked) by this process; on success it becomes
    ``target`` (the folder a symlink ``target`` names)."""
    target = resolve_target(Path(target))
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    guard = _SignalGuard()
    guard.install()
    build, owner = None, -1
    try:
        with guard.deferred(completed=False):  # a signal now waits until the folder has a name
            build, owner = fresh_folder(lambda: hidden_sibling(target, TMP_TAG, pid=False))
        yield build
        _fsync_tree(build)
        check_target(target, overwrite)
        with guard.deferred():
            _commit(build, target)
    except BaseException:
        guard.deferring = True  # a second Ctrl-C must not stop the clean-up half-way
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
        guard.restore()


def _commit(build: Path, target: Path) -> None:
    """Put ``build`` at ``target``; a dataset there is replaced whole and then deleted.

    Where the system can (Linux ``renameat2``), the two folders are exchanged in one step,
    so ``target`` is never missing; elsewhere the old one is parked as
    ``.NAME.posgen-old-*`` first. Either way the old dataset stays locked by this run
    until it is deleted, so no other run restores or removes it meanwhile.
    """
    if not os.path.lexists(target):
        rename_new(build, target)
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


RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
"""``renameat2`` flags (Linux): fail if the new name exists; swap the two names."""


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where the system or file system lacks it."""
    call = function("renameat2")
    if call is None:
        return False
    at_cwd = -100
    if call(at_cwd, os.fsencode(src), at_cwd, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


def exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` in one step; False where that is unsupported."""
    return _renameat2(a, b, RENAME_EXCHANGE)


def rename_new(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, never replacing something that appeared at ``dst``."""
    if not _renameat2(src, dst, RENAME_NOREPLACE):
        if os.path.lexists(dst):
            raise OutputExistsError(f"{dst} appeared while the dataset was built; it was kept")
        os.rename(src, dst)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            fsync_dir(path)


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (renames, new files) durable; a no-op where unsupported."""
    with suppress(OSError):
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
