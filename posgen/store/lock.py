"""Who owns a hidden folder or file: a lock its live owner holds, never a PID.

A build folder, a file being written and a dataset being replaced each belong to one run.
The owner holds a shared ``flock`` on it (a folder through a descriptor of the folder
itself, so nothing is added to the dataset) for as long as it works on it. The kernel drops
the lock when the owner dies, however it dies (SIGKILL, the OOM killer), and a lock means the
same in every PID namespace and container sharing the file system, where PIDs repeat.

Before removing or moving a leftover, a run *claims* it: an exclusive lock, taken without
waiting, held while it removes or moves it. A busy lock means a live process still owns the
leftover: it is left alone.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> with owned(folder):
...     with claim(folder) as state:
...         state
'busy'
>>> with claim(folder) as state:
...     state
'claimed'
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal

ClaimState = Literal["claimed", "busy", "unknown", "gone"]
"""``claimed``: no live owner, the caller holds it now; ``busy``: a live process owns it;
``unknown``: the file system refuses locks; ``gone``: it no longer exists."""

NO_LOCKS = (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.ENOSYS)
"""``flock`` errors of file systems without locks (some network file systems)."""
ATTEMPTS = 20
"""Fresh names tried before giving up (each fails only if another run claimed it at once)."""


class LostOwnership(OSError):
    """A fresh folder or file was removed by another run before its lock was taken."""


def _open(path: Path) -> int:
    """A descriptor of ``path`` itself (a symlink is not followed: ``ELOOP``)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def _same(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the (linked) file or folder open as ``fd``."""
    held = os.fstat(fd)
    try:
        now = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return held.st_nlink > 0 and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def hold(fd: int, path: Path) -> None:
    """Take the owner's shared lock on ``fd`` (open on ``path``) and check ``path`` is it.

    Waits while a claimer holds it (it is removing it), then raises :class:`LostOwnership`
    if the path no longer names the locked object. Where the file system has no locks, the
    owner goes on unlocked (claimers then see ``unknown`` and leave it alone).
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError as error:
        if error.errno not in NO_LOCKS:
            raise
    if not _same(path, fd):
        raise LostOwnership(errno.ENOENT, f"{path} was removed by another run", str(path))


@contextmanager
def owned(path: Path) -> Iterator[int]:
    """Hold the owner's lock on the existing folder or file ``path``; yields its descriptor."""
    fd = _open(path)
    try:
        hold(fd, path)
        yield fd
    finally:
        os.close(fd)


def fresh(make: Callable[[], Path], create: Callable[[Path], int]) -> tuple[Path, int]:
    """A new path from ``make()``, created by ``create`` (a descriptor) and locked by us.

    ``create`` must fail with ``FileExistsError`` when the path exists. The object is ours
    only once locked with the path still naming it; otherwise another name is tried.
    """
    for _ in range(ATTEMPTS):
        path = make()
        try:
            fd = create(path)
        except FileExistsError:
            continue
        try:
            hold(fd, path)
        except LostOwnership:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        return path, fd
    raise LostOwnership(errno.EEXIST, "no fresh name could be taken", str(make()))


def fresh_folder(make: Callable[[], Path]) -> tuple[Path, int]:
    """A new folder (named by ``make()``) that we own; its path and locked descriptor."""

    def create(path: Path) -> int:
        path.mkdir()
        try:
            return _open(path)
        except OSError:
            with suppress(OSError):
                path.rmdir()
            raise

    return fresh(make, create)


def fresh_file(make: Callable[[], Path]) -> tuple[Path, int]:
    """A new empty file (named by ``make()``) that we own, open for writing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    return fresh(make, lambda path: os.open(path, flags, 0o666))


@contextmanager
def claim(path: Path) -> Iterator[ClaimState]:
    """Try to take ``path`` from a dead owner; yields the :data:`ClaimState`.

    While the block runs the caller holds the exclusive lock (``claimed``), so no other
    run claims it too and its owner, were it still starting, cannot take it. A symbolic
    link has no owner (none is ever locked): it is ``claimed``.
    """
    try:
        fd = _open(path)
    except FileNotFoundError:
        yield "gone"
        return
    except OSError as error:
        if error.errno == errno.ELOOP or os.path.islink(path):
            yield "claimed"
            return
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield "busy"
            return
        except OSError as error:
            if error.errno not in NO_LOCKS:
                raise
            yield "unknown"
            return
        yield "claimed" if _same(path, fd) else "gone"
    finally:
        os.close(fd)


def remove_unowned(path: Path) -> bool:
    """Remove the leftover file ``path`` unless a live process owns it; True if removed."""
    with claim(path) as state:
        if state == "claimed":
            with suppress(FileNotFoundError):
                path.unlink()
            return True
    return False


@contextmanager
def exclusive(path: Path) -> Iterator[int]:
    """Hold the only lock on the existing folder ``path``, waiting while others hold it.

    What a worker holds on the work folder of the job it runs: a second worker of the same
    job waits, then finds the job done. :func:`owner_alive` probes it without waiting. On a
    file system without locks the holder goes on unlocked.
    """
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in NO_LOCKS:
                raise
        yield fd
    finally:
        os.close(fd)


def owner_alive(path: Path) -> bool | None:
    """Whether a live process holds :func:`exclusive` on ``path`` (None: no locks here).

    Takes a shared lock without waiting and drops it at once: a holder of
    :func:`exclusive` makes it fail; a missing ``path`` has no owner.
    """
    try:
        fd = _open(path)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError as error:
        if error.errno in NO_LOCKS:
            return None
        raise
    finally:
        os.close(fd)
    return False
