"""The C library, for the calls Python lacks: ``renameat2`` and ``prctl`` (Linux).

Loaded once, at import, so a child between ``fork`` and ``exec`` calls it without loading
anything (:func:`die_with_parent` runs there).

>>> function("no_such_call") is None
True
"""

from __future__ import annotations

import ctypes
import os
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


PR_SET_PDEATHSIG = 1
"""``prctl`` option (Linux): the signal this process gets when its parent dies."""


def die_with_parent(parent: int, signum: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies (Linux); end at
    once (exit ``128 + signum``) when the parent, PID ``parent``, died before that was set."""
    prctl = function("prctl")
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(128 + signum)
