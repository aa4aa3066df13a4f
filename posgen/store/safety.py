"""The store's safety primitives: an atomic file, an atomic folder and one lock.

- :func:`durable_file`: a file written to a hidden sibling, fsynced, renamed over its name.
- :func:`atomic_folder`: a folder built in a hidden sibling and renamed into place when
  complete; with ``overwrite`` the old one is exchanged for it in one step (``renameat2``),
  or parked as ``.NAME.posgen-old-*`` where the file system cannot.
- The lock: whoever works on a hidden folder or file holds a shared ``flock`` on it, which
  the kernel drops when the owner dies. A run removes a leftover only once it *claims* it
  (an exclusive lock, not waited for): :func:`recover`.

>>> import tempfile
>>> target = Path(tempfile.mkdtemp()) / "ds"
>>> with atomic_folder(target) as build:
...     _ = write_atomically(build / "posgen.json", b"{}")
>>> [p.name for p in target.iterdir()]
['posgen.json']
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Literal

from posgen import signals
from posgen.errors import RunError, UsageError
from posgen.store.manifest import MANIFEST_NAME

TMP_TAG = ".posgen-tmp-"
"""Build folders: ``.NAME.posgen-tmp-XXXX``, siblings of the target."""
OLD_TAG = ".posgen-old-"
"""A replaced dataset, parked while the new one is renamed in."""
FILE_TMP_TAG = ".tmp-"
"""A file being written: ``.NAME.tmp-PID-XXXX``, renamed to NAME when complete."""
HIDDEN_STEM_BYTES = 224
"""Longest ``.NAME`` kept whole in a hidden sibling's name (a tag, a PID and 8 hex digits
still fit the 255 bytes of a file name)."""


def hidden_stem(name: str) -> str:
    """``.NAME``, or for a name too long to take a tag, its start and a hash of the whole.

    >>> hidden_stem("ds"), len(hidden_stem("a" * 255)), hidden_stem("a" * 255)[-9:]
    ('.ds', 224, '~b0f3323e')
    """
    stem = f".{name}"
    if len(os.fsencode(stem)) <= HIDDEN_STEM_BYTES:
        return stem
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    keep = stem
    while len(os.fsencode(keep)) > HIDDEN_STEM_BYTES - 9:
        keep = keep[:-1]
    return f"{keep}~{digest}"


def hidden_sibling(path: Path, tag: str, pid: bool = True) -> Path:
    """A fresh hidden sibling of ``path``: ``.NAME`` + ``tag`` + ``PID-`` + 8 hex digits."""
    owner = f"{os.getpid()}-" if pid else ""
    return path.with_name(f"{hidden_stem(path.name)}{tag}{owner}{uuid.uuid4().hex[:8]}")


def hidden_siblings(path: Path, tags: tuple[str, ...]) -> list[Path]:
    """Existing hidden siblings of ``path`` with one of ``tags`` (no glob: names are literal)."""
    if not path.parent.is_dir():
        return []
    prefixes = tuple(f"{hidden_stem(path.name)}{tag}" for tag in tags)
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(prefixes))


LIBC = ctypes.CDLL(None, use_errno=True)
"""The C library, loaded at import (a child between ``fork`` and ``exec`` calls it)."""
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
PR_SET_PDEATHSIG = 1
ATTEMPTS = 20
"""Fresh names tried before giving up (each fails only if another run claimed it at once)."""
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
ClaimState = Literal["claimed", "busy", "gone"]
"""``claimed``: no live owner, the caller holds it now; ``busy``: a live process owns it
(or the file system has no locks); ``gone``: it no longer exists."""


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


class OutputExistsError(UsageError, FileExistsError):
    """The target exists and may not be replaced (a usage error, exit 2)."""

    def __str__(self) -> str:
        return " ".join(str(arg) for arg in self.args)


class LostOwnership(OSError):
    """A fresh folder or file was removed by another run before its lock was taken."""


# --- the lock ------------------------------------------------------------------------------


def _same(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the (linked) file or folder open as ``fd``."""
    held = os.fstat(fd)
    try:
        now = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return held.st_nlink > 0 and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _flock(fd: int, operation: int) -> bool:
    """``flock``; False where the file system has no locks (the caller goes on unlocked)."""
    try:
        fcntl.flock(fd, operation)
    except OSError as error:  # BlockingIOError (EAGAIN) is raised
        if error.errno not in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        return False
    return True


def hold(fd: int, path: Path) -> None:
    """Take the owner's shared lock on ``fd`` (open on ``path``) and check ``path`` is it:
    waits while a claimer removes it, then raises :class:`LostOwnership` if it is gone."""
    _flock(fd, fcntl.LOCK_SH)
    if not _same(path, fd):
        raise LostOwnership(errno.ENOENT, f"{path} was removed by another run", str(path))


@contextmanager
def owned(path: Path) -> Iterator[int]:
    """Hold the owner's lock on the existing folder or file ``path``; yields its descriptor."""
    fd = os.open(path, OPEN_FLAGS)
    try:
        hold(fd, path)
        yield fd
    finally:
        os.close(fd)


def fresh(make: Callable[[], Path], folder: bool) -> tuple[Path, int]:
    """A new folder (or empty file, open for writing) named by ``make()``, created and
    locked by us while the path still names it; its path and descriptor."""
    for _ in range(ATTEMPTS):
        path = make()
        try:
            if folder:
                path.mkdir()
            flags = OPEN_FLAGS if folder else os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            continue
        except OSError:
            if folder:
                with suppress(OSError):
                    path.rmdir()
            raise
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


@contextmanager
def claim(path: Path) -> Iterator[ClaimState]:
    """Try to take ``path`` from a dead owner; yields the :data:`ClaimState`, holding the
    exclusive lock while the block runs when ``claimed``. A symbolic link has no owner: it
    is ``claimed``.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with owned(folder), claim(folder) as state:
    ...     state
    'busy'
    """
    try:
        fd = os.open(path, OPEN_FLAGS)
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
            locked = _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            locked = False
        if not locked:
            yield "busy"
        else:
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
    """Hold the only lock on the existing folder ``path``, waiting while others hold it (a
    second worker of the same job waits, then finds it done)."""
    fd = os.open(path, OPEN_FLAGS)
    try:
        _flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def owner_alive(path: Path) -> bool | None:
    """Whether a live process holds :func:`exclusive` on ``path`` (None: no locks here)."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        return False
    try:
        return None if not _flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB) else False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def die_with_parent(parent: int, signum: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies; end at once
    (exit ``128 + signum``) when the parent, PID ``parent``, died before that was set."""
    LIBC.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(128 + signum)


# --- renames -------------------------------------------------------------------------------


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where the file system lacks it."""
    at_cwd = -100
    if LIBC.renameat2(at_cwd, os.fsencode(src), at_cwd, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


def exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` in one step; False where that is unsupported."""
    return _renameat2(a, b, RENAME_EXCHANGE)


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (renames, new files) durable; a no-op where unsupported."""
    with suppress(OSError):
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def fsync_tree(root: Path) -> None:
    """Make every file and folder under ``root`` durable."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            fsync_dir(path)


# --- the atomic file -----------------------------------------------------------------------


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


def write_target(path: Path) -> tuple[Path, bool]:
    """Where the bytes of ``path`` go, and whether they stream (a device or pipe). Links
    are resolved, so replacing ``link.json -> real.json`` replaces ``real.json``.

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


@contextmanager
def durable_file(path: Path) -> Iterator[HashingFile]:
    """A sink for the bytes of ``path``: hashed as written, fsynced, then renamed into place
    (a device or pipe is written in place). An ``OSError`` becomes :class:`WriteFailed`
    naming ``path``; unfinished copies left by killed writers are removed."""
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
        for stale in hidden_siblings(target, (FILE_TMP_TAG,)):
            remove_unowned(stale)
        temporary, fd = fresh(lambda: hidden_sibling(target, FILE_TMP_TAG), folder=False)
        with open(fd, "wb") as handle:
            sink = HashingFile(handle)
            yield sink
            handle.flush()
            os.fsync(handle.fileno())  # durable before it gets its name
            os.replace(temporary, target)  # while still locked: no one removes it meanwhile
    except BaseException as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise WriteFailed(path, error) from error
        raise


def write_atomically(path: Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` at once (see :func:`durable_file`); returns ``path``."""
    with durable_file(Path(path)) as sink:
        sink.write(data)
    return Path(path)


# --- the atomic folder ---------------------------------------------------------------------


def resolve_target(target: Path) -> Path:
    """Where the dataset named ``target`` lives: ``target``, or the folder its symlink names
    (a dangling one too); the link is kept, never replaced. A link that loops is refused."""
    target = Path(target)
    if not target.is_symlink():
        return target
    real = Path(os.path.realpath(target))
    if real.is_symlink() or real.parent.is_symlink():
        raise OutputExistsError(f"{target} is a symbolic link that loops; nothing was written")
    return real


def check_target(target: Path, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` unless ``target`` may be (re)created: it is free, or
    with ``overwrite`` an empty folder or a posgen dataset (it holds ``posgen.json``).

    >>> import tempfile
    >>> check_target(Path(tempfile.mkdtemp()) / "new", overwrite=False)  # free: nothing raised
    """
    target = resolve_target(target)
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a folder; nothing was written")
    if not overwrite:
        raise OutputExistsError(f"{target} exists; pass --overwrite to replace it")
    if any(target.iterdir()) and not (target / MANIFEST_NAME).is_file():
        raise OutputExistsError(
            f"{target} is not a posgen dataset (no {MANIFEST_NAME}); refusing to replace it"
        )


@contextmanager
def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh build folder, locked by this process; on success it becomes ``target``
    (the folder a symlink ``target`` names). A signal removes the build; one that arrives
    while it gets its name waits until it has it."""
    target = resolve_target(Path(target))
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    build, owner = None, -1
    try:
        with signals.deferred():  # a signal now waits until the folder has a name
            build, owner = fresh(lambda: hidden_sibling(target, TMP_TAG, pid=False), True)
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
    """Put ``build`` at ``target``; a dataset there is replaced whole, then deleted. The old
    dataset stays locked by this run until it is deleted."""
    if not os.path.lexists(target):
        appeared = f"{target} appeared while the dataset was built; it was kept"
        try:
            if not _renameat2(build, target, RENAME_NOREPLACE):
                if os.path.lexists(target):
                    raise OutputExistsError(appeared)
                os.rename(build, target)
        except FileExistsError as error:
            raise OutputExistsError(appeared) from error
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


def leftovers(target: Path) -> list[Path]:
    """Temporary siblings of ``target`` left by runs that were killed (or still running)."""
    return hidden_siblings(target, (TMP_TAG, OLD_TAG))


def recover(target: Path) -> list[str]:
    """Clean up after killed runs; one line per leftover. Those a live process owns are left
    alone; a parked ``.NAME.posgen-old-*`` dataset is renamed back when ``target`` is missing
    (the run died between its two renames); the rest is removed."""
    target = Path(target)
    actions = []
    for name in dict.fromkeys([target, resolve_target(target)]):
        for stale in leftovers(name):
            actions += _recover_one(stale, name)
    return actions


def _recover_one(stale: Path, target: Path) -> list[str]:
    with claim(stale) as state:
        if state == "gone":
            return []
        if state == "busy":
            return [f"left {stale} alone: a running process still owns it"]
        if OLD_TAG in stale.name and not os.path.lexists(target):
            os.rename(stale, target)
            return [f"restored {target} from {stale.name} (a run died while replacing it)"]
        if stale.is_symlink() or not stale.is_dir():
            with suppress(FileNotFoundError):
                stale.unlink()
        else:
            shutil.rmtree(stale, ignore_errors=True)
    if os.path.lexists(stale):
        return [f"could not remove leftover {stale} of an interrupted run; remove it by hand"]
    return [f"removed leftover {stale} of an interrupted run"]
