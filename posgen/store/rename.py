"""Renames that never replace by accident, and fsync of what they wrote (Linux ``renameat2``).

:func:`exchange` swaps two folders in one step; :func:`rename_new` gives a folder a name
that must still be free. Where the system or file system lacks ``renameat2``, the first
reports False and the second falls back to a checked ``os.rename``.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> (root / "build").mkdir()
>>> rename_new(root / "build", root / "ds")
>>> sorted(p.name for p in root.iterdir())
['ds']
"""

from __future__ import annotations

import ctypes
import errno
import os
from contextlib import suppress
from pathlib import Path

from posgen.store.libc import function

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
    """Rename ``src`` to ``dst``; ``FileExistsError`` if something is at ``dst`` (never
    replaced)."""
    if not _renameat2(src, dst, RENAME_NOREPLACE):
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
        os.rename(src, dst)


def fsync_tree(root: Path) -> None:
    """Make every file and folder under ``root`` durable."""
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
