"""The C library, for the calls Python lacks: ``renameat2`` and ``prctl`` (Linux).

>>> function("no_such_call") is None
True
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any


def _load() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


LIBC = _load()
"""The process's C library (errno kept for :func:`ctypes.get_errno`); None where unloadable."""


def function(name: str) -> Callable[..., Any] | None:
    """The C function ``name``; None where the library or the function is missing."""
    return getattr(LIBC, name, None) if LIBC is not None else None
