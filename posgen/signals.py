"""One signal model: SIGINT, SIGTERM and SIGHUP end a command with one line and 130, 143 or 129.

:func:`install` turns each into :class:`Interrupted` (raised once), which unwinds the command;
under :func:`deferred` it is raised when the block ends. Test hook: ``POSGEN_SIGNAL_AT=POINT[:N]:
SIGNAL`` makes the process send itself SIGNAL at :func:`point` ``POINT`` (its N-th pass).

>>> Interrupted(signal.SIGTERM).exit_code, Interrupted(signal.SIGHUP).name
(143, 'SIGHUP')
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

CAUGHT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
HOOK_ENV = "POSGEN_SIGNAL_AT"


class Interrupted(BaseException):
    """A signal stopped the command; ``completed``: its target was committed whole."""

    def __init__(self, signum: int, completed: bool = False) -> None:
        self.signum = int(signum)
        self.completed = completed
        self.name = signal.Signals(signum).name
        self.left: str | None = None  # what the command left, said after the signal
        super().__init__(f"interrupted by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    received: int | None = None  # the first signal not yet raised
    depth = 0  # open deferred()/held() blocks
    raised = False  # later signals wait, so a second Ctrl-C cannot break the clean-up
    unraisable_hook: Any = None  # the sys.unraisablehook install() wrapped


def _handle(signum: int, frame: FrameType | None) -> None:
    if _State.depth == 0 and not _State.raised:
        _State.raised = True
        raise Interrupted(signum)
    if _State.received is None:
        _State.received = signum


def _swallowed(unraisable: Any) -> None:
    if isinstance(unraisable.exc_value, Interrupted) and _State.received is None:
        _State.received = unraisable.exc_value.signum
    _State.unraisable_hook(unraisable)


def install() -> dict[int, Any]:
    """Catch the three signals (in the main thread); returns the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {signum: signal.signal(signum, _handle) for signum in CAUGHT_SIGNALS}
    if sys.unraisablehook is not _swallowed:
        _State.unraisable_hook, sys.unraisablehook = sys.unraisablehook, _swallowed
    _State.received, _State.depth, _State.raised = None, 0, False
    return previous


def restore(previous: dict[int, Any]) -> None:
    """Put back the handlers :func:`install` replaced; forget any signal received."""
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    outermost = any(handler is not _handle for handler in previous.values())
    if outermost and sys.unraisablehook is _swallowed:
        sys.unraisablehook = _State.unraisable_hook
    _State.received, _State.depth, _State.raised = None, 0, False


def ignore() -> None:
    """Ignore the three signals: the process is exiting with its status set."""
    if threading.current_thread() is threading.main_thread():
        for signum in CAUGHT_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def received() -> int | None:
    """The signal received and not yet raised, if any."""
    return _State.received


def check(completed: bool = False) -> None:
    """Raise :class:`Interrupted` for a signal that arrived and was not raised yet."""
    if _State.received is not None and _State.depth == 0:
        signum, _State.received, _State.raised = _State.received, None, True
        raise Interrupted(signum, completed)


def hold() -> None:
    """Hold every later signal for good (the command is printing its last line)."""
    _State.depth += 1


@contextmanager
def held() -> Iterator[None]:
    """Hold signals while the block runs (a clean-up); they stay pending afterwards."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1


@contextmanager
def deferred(completed: bool = False) -> Iterator[None]:
    """Hold signals while the block runs; raise the first when it ends (not on errors).
    ``completed``: the target is complete once the block has run (a commit)."""
    check()
    with held():
        yield
    check(completed)


_passes: Counter[str] = Counter()


def point(name: str, number: int | None = None) -> None:
    """A named moment for the test hook :data:`HOOK_ENV`. ``N`` counts this process's passes,
    or is the caller's ``number`` (a training step); ``SIGNAL@parent`` goes to the sweep."""
    wanted = os.environ.get(HOOK_ENV)
    if not wanted:
        return
    parts = wanted.split(":")
    if len(parts) not in (2, 3) or not all(part.isdigit() for part in parts[1:-1]):
        return  # not POINT[:N]:SIGNAL: ignored as another point's is, never a traceback
    where, *count, which = parts
    which, _, whom = which.partition("@")
    if where != name or which not in signal.Signals.__members__:
        return
    _passes[name] += 1
    if not count or int(count[0]) == (_passes[name] if number is None else number):
        if whom == "parent":
            _signal_parent_and_wait(signal.Signals[which])
        else:
            os.kill(os.getpid(), signal.Signals[which])


def _signal_parent_and_wait(signum: int, limit: float = 600.0) -> None:
    """Send ``signum`` to the sweep, wait (a stand-in handler and the wakeup fd: the signal may
    reach any thread) until it passes the signal back, then take it here."""
    arrived: list[int] = []
    read, write = os.pipe()
    os.set_blocking(write, False)
    previous = signal.signal(signum, lambda number, frame: arrived.append(number))
    wakeup = signal.set_wakeup_fd(write)
    try:
        os.kill(os.getppid(), signum)
        deadline = time.monotonic() + limit
        while not arrived and time.monotonic() < deadline:
            ready, _, _ = select.select([read], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                os.read(read, 64)  # the handler runs at the next instruction
    finally:
        signal.set_wakeup_fd(wakeup)
        signal.signal(signum, previous)
        os.close(read)
        os.close(write)
    if not arrived:
        os._exit(128 + signum)
    signal.raise_signal(signum)  # the real handler runs as if the parent's signal arrived now
