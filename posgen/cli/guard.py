"""The last line of defence: any error that reaches the top of a command becomes one line.

Operating-system errors (a folder without search permission, an unreadable file, a name
too long) are mapped here, in one place, to ``error: PATH: reason`` and an exit status:
2 when the path the user gave cannot be used (bad input), 1 when the run failed on the
way (disk full, read-only file system, I/O error). Anything else unexpected becomes
``error: internal error (TypeName): message`` with exit status 1; the traceback is
printed only with ``posgen --debug`` or ``POSGEN_DEBUG=1``.

>>> os_error_problem(PermissionError(13, "Permission denied", "ds/posgen.json"))
('ds/posgen.json: permission denied', 2)
>>> os_error_problem(OSError(28, "No space left on device", "out/x.json"))
('out/x.json: no space left on device', 1)
"""

from __future__ import annotations

import errno
import os
import traceback

from posgen.errors import shown

DEBUG_ENV = "POSGEN_DEBUG"
"""Set to a non-empty value other than ``0`` to see tracebacks of unexpected errors."""

BAD_PATH_ERRNOS = frozenset(
    code
    for code in (
        errno.EACCES,
        errno.EPERM,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.EEXIST,
        getattr(errno, "EILSEQ", None),
    )
    if code is not None
)
"""Errors that say the named path cannot be used as given: bad input, exit status 2."""


def os_error_problem(error: OSError) -> tuple[str, int]:
    """One line (``PATH: reason``) and the exit status for an operating-system error."""
    reason = (error.strerror or str(error) or type(error).__name__).strip()
    reason = reason[:1].lower() + reason[1:]
    paths = [p for p in (error.filename, error.filename2) if p is not None]
    where = " -> ".join(shown(os.fsdecode(p) if isinstance(p, bytes) else p) for p in paths)
    line = f"{where}: {reason}" if where else reason
    if error.errno is None and not paths:
        line = shown(str(error)) or type(error).__name__
    code = 2 if error.errno in BAD_PATH_ERRNOS else 1
    return line, code


def debugging(flag: bool = False) -> bool:
    """Whether tracebacks are wanted (``--debug`` or :data:`DEBUG_ENV`)."""
    return flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def unexpected_problem(error: BaseException, debug: bool = False) -> str:
    """One line for an error nobody anticipated (the traceback is the caller's to print).

    >>> unexpected_problem(KeyError("x"))
    "internal error (KeyError): 'x' (rerun with --debug or POSGEN_DEBUG=1 for the traceback)"
    """
    message = shown(str(error)) or "(no message)"
    line = f"internal error ({type(error).__name__}): {message}"
    return (
        line
        if debugging(debug)
        else f"{line} (rerun with --debug or {DEBUG_ENV}=1 for the traceback)"
    )


def traceback_text(error: BaseException) -> str:
    """The full traceback of ``error``, for ``--debug``."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()
