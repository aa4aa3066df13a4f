"""The store's safety primitives: an atomic file, an atomic folder and one lock.

Whoever works on a hidden sibling (file or folder) holds a shared ``flock`` on it, which the
kernel drops when the owner dies; :func:`recover` removes a leftover only once it holds it
exclusively.

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
import re
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

TMP_TAG = ".posgen-tmp-"  # build folders: .NAME.posgen-tmp-XXXX
OLD_TAG = ".posgen-old-"  # a replaced dataset, parked while the new one is renamed in
FILE_TMP_TAG = ".tmp-"  # a file being written: .NAME.tmp-PID-XXXX
HIDDEN_STEM_BYTES = 224  # longest .NAME kept whole: a tag, a PID and 8 hex digits still fit


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
    try:
        names = os.listdir(path.parent)
    except PermissionError:  # a folder one may write in but not list (a drop box): none seen
        return []
    return sorted(path.parent / name for name in names if name.startswith(prefixes))


LIBC = ctypes.CDLL(None, use_errno=True)  # loaded at import: a child before exec calls it
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
PR_SET_PDEATHSIG = 1
ATTEMPTS = 20  # fresh names tried before giving up
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
ClaimState = Literal["claimed", "busy", "gone"]  # busy: a live owner (or no locks here)


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

    def __reduce__(self) -> tuple[type[WriteFailed], tuple[Path, OSError]]:  # from workers
        return (WriteFailed, (self.path, self.reason))


class OutputExistsError(UsageError, FileExistsError):
    """The target exists and may not be replaced (a usage error, exit 2)."""


class LostOwnership(OSError):
    """A fresh folder or file was removed by another run before its lock was taken."""


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
    """Take the owner's shared lock on ``fd``; :class:`LostOwnership` if ``path`` is gone."""
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
    """A new folder (or empty file, open for writing) named by ``make()``, owned by us."""
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
    """Try to take ``path`` from a dead owner (a symlink has none), holding it while
    ``claimed``.

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


@contextmanager
def exclusive(path: Path) -> Iterator[int]:
    """Hold the only lock on the existing folder ``path``, waiting while others hold it."""
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
    """Receive ``signum`` when the parent dies; exit ``128 + signum`` if it already has."""
    LIBC.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(128 + signum)


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """False where the file system lacks ``renameat2``."""
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
    """Make a folder's entries durable (a no-op where unsupported)."""
    with suppress(OSError):
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def walk(
    root: Path, followlinks: bool = False, strict: bool = False
) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(root)`` (top-down, unreadable folders skipped, or with ``strict`` raised)
    without recursion: before Python 3.12 a tree of 1,000 nested folders was a RecursionError."""
    stack = [str(root)]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as entries:
                names = [(entry.name, _is_dir(entry)) for entry in entries]
        except OSError as error:
            if strict and not isinstance(error, FileNotFoundError):  # gone meanwhile: skipped
                raise
            continue
        dirs = [name for name, folder in names if folder]
        yield top, dirs, [name for name, folder in names if not folder]
        below = [os.path.join(top, name) for name in reversed(dirs)]
        stack += [path for path in below if followlinks or not os.path.islink(path)]


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def fsync_tree(root: Path) -> None:
    """Make every file and folder under ``root`` durable."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            fsync_dir(path)


class HashingFile:
    """A write-only file that hashes and counts what passes through."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.digest, self.size, self.closed = handle, hashlib.sha256(), 0, False

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def write_target(path: Path) -> tuple[Path, bool]:
    """Where the bytes of ``path`` go (links resolved), and whether they stream (a pipe).

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
def durable_file(path: Path, follow: bool = True) -> Iterator[HashingFile]:
    """A sink for the bytes of ``path``: hashed, fsynced, renamed into place (a pipe is written
    in place); ``OSError`` becomes :class:`WriteFailed`. ``follow=False``: a link or a pipe at
    ``path`` is replaced, never followed."""
    path = Path(path)
    target, streamed = write_target(path) if follow else (path, False)
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
            remove_leftover(stale)
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


def write_atomically(path: Path, data: bytes, follow: bool = True) -> Path:
    """Replace ``path`` with ``data`` at once (``follow``: as :func:`durable_file`)."""
    with durable_file(Path(path), follow) as sink:
        sink.write(data)
    return Path(path)


def existing_ancestor(path: Path) -> Path:
    """The nearest path at or above ``path`` that exists (where the output will live)."""
    path = Path(path).absolute()
    return next((p for p in (path, *path.parents) if p.exists()), Path(path.anchor))


def file_in_the_way(target: Path) -> str | None:
    """Why no folder can be made for ``target`` (a file above it), or ``None``."""
    base = existing_ancestor(Path(target).parent)
    if base.is_dir():
        return None
    return f"cannot create {target}: {base} is a file, not a folder; nothing was written"


def resolve_target(target: Path) -> Path:
    """``target``, or the folder its symlink names (the link is kept); a loop is refused."""
    target = Path(target)
    if not target.is_symlink():
        return target
    real = Path(os.path.realpath(target))
    if real.is_symlink() or real.parent.is_symlink():
        raise OutputExistsError(f"{target} is a symbolic link that loops; nothing was written")
    return real


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse ``target`` unless it is free, or with ``overwrite`` empty or a posgen dataset."""
    target = resolve_target(target)
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a folder; nothing was written")
    if not overwrite:
        raise OutputExistsError(f"{target} exists; pass --overwrite to replace it")
    if any(target.iterdir()) and not is_dataset_folder(target):
        raise OutputExistsError(
            f"{target} is not a posgen dataset (no {MANIFEST_NAME} that says so); "
            "refusing to replace it"
        )
    if (stuck := read_only_folder(target)) is not None:
        what, fix = "read-only", f"make it writable (chmod -R u+w {target}) or remove it"
        with suppress(OSError):
            if os.stat(stuck).st_uid != os.geteuid():  # only its owner may chmod it
                what, fix = "another user's", "choose another --out"
        raise OutputExistsError(
            f"{target} cannot be replaced: {stuck} is {what}, so its files could not be "
            f"deleted; {fix}; nothing was written"
        )


def read_only_folder(root: Path, written: bool = False) -> Path | None:
    """The first folder at or below ``root`` whose entries this user cannot delete (as ``rm -r``
    would find it: no read, write or search permission) or, with ``written``, add; or ``None``."""
    try:
        for folder, dirs, files in walk(root, strict=True):
            if (dirs or files or written) and not os.access(folder, os.W_OK | os.X_OK):
                return Path(folder)
    except OSError as error:  # a folder that cannot be listed
        return Path(error.filename or root)
    return None


DATASET_HEAD = re.compile(rb'\{\s*"format"\s*:\s*"posgen-dataset"')


def is_dataset_folder(folder: Path) -> bool:
    """Whether ``folder/posgen.json`` is a regular file that opens ``{"format": "posgen-dataset"``.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "posgen.json").write_text("{}")
    >>> is_dataset_folder(folder)
    False
    >>> _ = (folder / "posgen.json").write_text('{ "format": "posgen-dataset", "rows": ')
    >>> is_dataset_folder(folder)
    True
    """
    try:
        fd = os.open(folder / MANIFEST_NAME, OPEN_FLAGS)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as handle:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        return regular and DATASET_HEAD.match(handle.read(256)) is not None


@contextmanager
def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh build folder, locked by us, that becomes ``target`` on success (or
    ``overwrite``: replaces it whole); a signal removes it."""
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
            if owner >= 0:  # first: at the open-files limit (ulimit -n) rmtree needs it
                os.close(owner)
            owner = -1
            if build is not None and os.path.lexists(build):
                shutil.rmtree(build, ignore_errors=True)
            recover(target)  # puts a parked dataset back if the commit failed half-way
        raise
    finally:
        if owner >= 0:
            os.close(owner)


def _commit(build: Path, target: Path) -> None:
    """Put ``build`` at ``target``; a dataset there is replaced whole (locked), then deleted."""
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
    """Build folders and parked datasets beside ``target``."""
    return hidden_siblings(target, (TMP_TAG, OLD_TAG))


def recover(target: Path) -> list[str]:
    """Clean up after killed runs beside ``target``, one line per leftover."""
    target = Path(target)
    actions = []
    for name in dict.fromkeys([target, resolve_target(target)]):
        for stale in leftovers(name):
            actions += remove_leftover(stale, name)
    return actions


def remove_leftover(stale: Path, target: Path | None = None) -> list[str]:
    """Remove ``stale`` unless a live process or another user owns it (a parked dataset goes
    back to a missing ``target``)."""
    try:
        if os.lstat(stale).st_uid != os.geteuid():  # in a shared /tmp: never ours to remove
            return [f"left {stale} alone: it belongs to another user"]
    except FileNotFoundError:
        return []
    with claim(stale) as state:
        if state == "gone":
            return []
        if state == "busy":
            return [f"left {stale} alone: a running process still owns it"]
        if target and OLD_TAG in stale.name and not os.path.lexists(target):
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
