"""Single files that appear only when complete: hashed as written, fsynced, then renamed in.

:func:`durable_file` and :func:`write_atomically` write one file to a hidden temporary
sibling, fsync it, then rename it over the name: readers see the old file or the new one.

>>> import tempfile
>>> path = write_atomically(Path(tempfile.mkdtemp()) / "a.json", b"{}")
>>> path.read_bytes(), [p.name for p in path.parent.iterdir()]
(b'{}', ['a.json'])
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from posgen.errors import RunError
from posgen.store.layout import temporaries_of, temporary_name
from posgen.store.lock import fresh_file, remove_unowned


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
