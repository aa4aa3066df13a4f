"""posgen's errors, by what the user must do: :class:`UsageError` (exit 2) fix the input,
:class:`DataError` (exit 1) repair the data, :class:`RunError` (exit 1) retry the run; and
:func:`error_exit`, the one map from any exception to ``error:`` lines and an exit status.

>>> from posgen.spec import TaskSpec
>>> try:
...     TaskSpec(task="cot", modulus=1)
... except ValidationError as error:
...     print(problem_lines(error)[0])
modulus: Input should be greater than or equal to 2 (given: 1)
"""

from __future__ import annotations

import errno
import os
import reprlib
import sys
from collections.abc import Callable
from typing import Any

import click
from pydantic import ValidationError

from posgen.signals import Interrupted

SHOWN_CHARS = 200
"""Longest text of one value shown in an error line."""

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 40, 40, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4


def shown(text: object, limit: int = SHOWN_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters, undecodable bytes escaped.

    >>> shown("a" * 300, 10), shown("x\\udcff"), shown("x\\ud800")
    ('aaaaaaa...', 'x\\\\xff', 'x\\\\ud800')
    """
    value = str(text)
    try:
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate no undecodable byte stands for: \ud800
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 3] + "..."


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless one: ``counted(1, "run")`` is ``'1 run'``.

    >>> counted(1, "training"), counted(54, "training")
    ('1 training', '54 trainings')
    """
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def not_utf8(raw: bytes, error: UnicodeDecodeError) -> str:
    """Where ``raw`` stops being UTF-8, for an error line: ``not UTF-8 (byte 3 is b'\\xe9')``."""
    return f"not UTF-8 (byte {error.start} is {raw[error.start : error.start + 1]!r})"


class PosgenError(Exception):
    """Base of every error posgen reports as ``error:`` lines (never a traceback)."""

    exit_code = 1
    headline: str | None = None  # e.g. which folder is damaged
    problems: list[str] | None = None  # one a line; None: the message is one problem

    @property
    def lines(self) -> list[str]:
        """One line per problem (a newline inside one never starts a second line)."""
        text = [str(self)] if self.problems is None else self.problems
        return [" ".join(line.split()) for line in text if line.strip()]

    @property
    def printed(self) -> list[str]:
        """The ``error:`` lines: the headline after a single problem, or before several."""
        lines = self.lines
        if self.headline is None:
            return lines
        if len(lines) == 1:
            return [f"{lines[0]} ({self.headline})"]
        return [self.headline, *lines]


class UsageError(PosgenError):
    """Bad input: exit status 2."""

    exit_code = 2


class UsageProblems(UsageError):
    """Bad input, several problems: one line each."""

    def __init__(self, lines: list[str]) -> None:
        self.problems = list(lines)
        super().__init__("\n".join(lines))


class DataError(PosgenError):
    """Data that fails its integrity check: exit status 1."""


class RunError(PosgenError):
    """The run failed (writing, publishing): exit status 1."""


def problem_lines(
    error: ValidationError, locate: Callable[[tuple[Any, ...]], tuple[Any, ...]] = tuple
) -> list[str]:
    """One line per problem: ``field.path: message (given: value)``, the path being
    ``locate(loc)`` of the problem's ``loc``."""
    lines = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        given = item.get("input")
        where = shown(".".join(str(part) for part in locate(item["loc"])), 120) or "spec"
        line = f"{where}: {message}"
        if item["type"] != "missing" and not isinstance(given, dict):
            line += f" (given: {shown(_REPR.repr(given), 60)})"  # bounded: never walks it all
        lines.append(" ".join(line.split()))
    return lines


DEBUG_ENV = "POSGEN_DEBUG"
"""Set to a non-empty value other than ``0`` to see tracebacks of unexpected errors."""
INTERRUPTED_STATE = "no partial output was left"
"""What a command stopped by a signal left, unless :attr:`Interrupted.left` says more."""
BAD_PATH_ERRNOS = frozenset(
    (errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG,
     errno.ELOOP, errno.EEXIST, errno.EILSEQ)
)  # fmt: skip
"""Errors that say the named path cannot be used as given: bad input, exit status 2."""


def os_error_problem(error: OSError) -> tuple[str, int]:
    """One line (``PATH: reason``) and the exit status: 2 when the path cannot be used, else 1.

    >>> os_error_problem(PermissionError(13, "Permission denied", "ds/posgen.json"))
    ('ds/posgen.json: permission denied', 2)
    >>> os_error_problem(OSError(28, "No space left on device", "out/x.json"))
    ('out/x.json: no space left on device', 1)
    """
    reason = (error.strerror or str(error) or type(error).__name__).strip()
    reason = reason[:1].lower() + reason[1:]
    paths = [p for p in (error.filename, error.filename2) if p is not None]
    where = " -> ".join(shown(os.fsdecode(p) if isinstance(p, bytes) else p) for p in paths)
    line = f"{where}: {reason}" if where else reason
    if error.errno is None and not paths:
        line = shown(str(error)) or type(error).__name__
    return line, 2 if error.errno in BAD_PATH_ERRNOS else 1


NO_THREAD = ("can't start new thread", "Failed to launch worker thread")  # Python's, Arrow's


def machine_limit(error: BaseException) -> bool:
    """Whether ``error`` is the machine's limit (memory, threads), never damage or bad input.

    >>> machine_limit(RuntimeError("can't start new thread")), machine_limit(ValueError("x"))
    (True, False)
    """
    return isinstance(error, MemoryError) or any(said in str(error) for said in NO_THREAD)


def debugging(flag: bool = False) -> bool:
    """Whether tracebacks are wanted (``--debug`` or :data:`DEBUG_ENV`)."""
    return flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def error_exit(error: BaseException, debug: bool = False) -> tuple[list[str], int]:
    """The ``error:`` lines (without the prefix) and the exit status for ``error``.

    >>> import signal
    >>> error_exit(Interrupted(signal.SIGTERM))
    (['interrupted by SIGTERM; no partial output was left'], 143)
    >>> error_exit(MemoryError())
    (['out of memory (MemoryError): an allocation failed'], 1)
    >>> error_exit(KeyError("x"))[0]
    ["internal error (KeyError): 'x' (rerun with --debug or POSGEN_DEBUG=1 for the traceback)"]
    """
    if isinstance(error, Interrupted):
        return [f"{error}; {error.left or INTERRUPTED_STATE}"], error.exit_code
    if isinstance(error, KeyboardInterrupt) or (
        isinstance(error, click.Abort) and isinstance(error.__context__, KeyboardInterrupt)
    ):  # SIGINT before posgen's handler was installed
        return [f"interrupted by SIGINT; {INTERRUPTED_STATE}"], 130
    if isinstance(error, PosgenError):
        return error.printed, error.exit_code
    if isinstance(error, ValidationError):  # a spec or config the user gave
        return problem_lines(error), 2
    if isinstance(error, ModuleNotFoundError):  # an optional extra is not installed
        return [f"{error.name or error} is not available: {error}"], 2
    if isinstance(error, ImportError):  # installed, but it did not load (ulimit -v): no usage
        return [f"{error.name or 'a library'} could not be loaded: {error}"], 1
    if isinstance(error, click.UsageError):
        where = f" (see '{error.ctx.command_path} -h')" if error.ctx is not None else ""
        return [f"{' '.join(error.format_message().split())}{where}"], error.exit_code
    if isinstance(error, click.ClickException):
        return [error.format_message()], error.exit_code
    if isinstance(error, click.Abort):
        return ["aborted"], 1
    if isinstance(error, OSError):
        line, code = os_error_problem(error)
        return [line], code
    if isinstance(error, MemoryError):  # the machine's limit (ulimit -v, cgroup), not a bug
        said = shown(str(error)) or "an allocation failed"
        return [f"out of memory ({type(error).__name__}): {said}"], 1
    if machine_limit(error):  # no thread: its stack (ulimit -v) or ulimit -u
        line = f"no thread could be started ({type(error).__name__}): {shown(str(error))}"
        return [f"{line}; the machine's memory or process limit is reached"], 1
    line = f"internal error ({type(error).__name__}): {shown(str(error)) or '(no message)'}"
    if not debugging(debug):
        line += f" (rerun with --debug or {DEBUG_ENV}=1 for the traceback)"
    return [line], 1


def human_bytes(size: float) -> str:
    """Bytes in the largest unit below 1024.

    >>> human_bytes(3_456_000), human_bytes(12)
    ('3.3 MiB', '12 B')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            break
        size /= 1024
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"


def mean_std_cell(mean: float | None, std: float | None) -> str:
    """A result table's cell: mean ± std, the mean alone, or ``-`` without a mean.

    >>> mean_std_cell(0.5, 0.1), mean_std_cell(1.0, None), mean_std_cell(None, None)
    ('0.500 ± 0.100', '1.000', '-')
    """
    if mean is None:
        return "-"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says an allocation failed (torch is looked up, never imported)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, MemoryError) or "allocate" in str(error)
