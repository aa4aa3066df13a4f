"""SIGINT, SIGTERM and SIGHUP end a command with one line and 130, 143 or 129, at any moment.

:func:`install` (called first thing by the ``posgen`` entry point, before the commands are
even imported, and again by :class:`posgen.cli.PosgenGroup`) turns each of the three into
:class:`Interrupted`, a ``BaseException`` that unwinds the command: build folders are
removed on the way (:mod:`posgen.store.safety`), and the CLI prints
``error: interrupted by SIGTERM; ...`` and exits ``128 + signal``.

Where an exception must not appear (inside a lazy ``import torch``, where Python can turn
it into ``SystemError`` or swallow it; in the middle of an optimiser step), code runs
:func:`deferred`: the signal is remembered and raised when the block ends. A signal
raised where Python swallows exceptions (``__del__``, weakref callbacks) is remembered
too, and :func:`check` raises it at the next check point; the CLI checks once more when
the command returns, so no signal ever ends in exit 0.

The training loop calls :func:`check` between steps, so a run sees ``Interrupted`` at a
step boundary, with the model and optimiser whole (what a checkpoint-on-SIGTERM needs).

Test hook: ``POSGEN_SIGNAL_AT=POINT:SIGNAL`` (e.g. ``import:SIGTERM``) makes the process
send itself SIGNAL when it reaches :func:`point` ``POINT``, so tests stop a run at a named
moment without sleeping.

>>> Interrupted(signal.SIGTERM).exit_code, Interrupted(signal.SIGHUP).name
(143, 'SIGHUP')
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

CAUGHT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
HOOK_ENV = "POSGEN_SIGNAL_AT"
"""Test hook: ``POINT:SIGNAL`` sends SIGNAL to this process at :func:`point` ``POINT``."""


class Interrupted(BaseException):
    """A signal stopped the command; whatever it was building was removed.

    A ``BaseException`` like ``KeyboardInterrupt``, so ``except Exception`` does not swallow it.

    >>> Interrupted(signal.SIGINT).name, Interrupted(signal.SIGINT).exit_code
    ('SIGINT', 130)
    """

    def __init__(self, signum: int, completed: bool = False) -> None:
        self.signum = int(signum)
        self.completed = completed
        """True when the signal arrived during the final rename: the target is complete."""
        self.name = signal.Signals(signum).name
        self.left: str | None = None
        """What the command left, said after the signal (set by the command on the way up)."""
        super().__init__(f"interrupted by {self.name}")

    @property
    def exit_code(self) -> int:
        """The shell convention for a death by signal: 128 + signal number."""
        return 128 + self.signum


class _State:
    received: int | None = None
    """The first signal received and not yet handled by the command."""
    depth = 0
    """How many :func:`deferred` blocks are open."""
    raised = False
    """Whether the handler raised already: later signals wait for :func:`check`, so a second
    Ctrl-C cannot break the clean-up the first one started."""


def _handle(signum: int, frame: FrameType | None) -> None:
    if _State.received is None:
        _State.received = signum
    if _State.depth == 0 and not _State.raised:
        _State.raised = True
        raise Interrupted(_State.received)


def install() -> dict[int, Any]:
    """Catch SIGINT/SIGTERM/SIGHUP from now on; returns the handlers they replaced.

    Only the main thread can set handlers; elsewhere nothing changes (and ``{}`` is returned).
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {signum: signal.signal(signum, _handle) for signum in CAUGHT_SIGNALS}
    if any(handler is not _handle for handler in previous.values()):
        _State.received = None  # a signal caught earlier by posgen's entry point is kept
    _State.depth, _State.raised = 0, False
    return previous


def restore(previous: dict[int, Any]) -> None:
    """Put back the handlers :func:`install` replaced and forget any signal received; when
    they were posgen's own (the entry point's), keep them and hold later signals instead,
    for the entry point to see (:func:`received`) once the command is done."""
    if previous and all(handler is _handle for handler in previous.values()):
        hold()
        return
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    _State.received, _State.depth, _State.raised = None, 0, False


def ignore() -> None:
    """Ignore the three signals from now on: the process is exiting with its status set
    (Python restores their default actions while it shuts down, but not an ignored one)."""
    if threading.current_thread() is threading.main_thread():
        for signum in CAUGHT_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def received() -> int | None:
    """The signal received and not yet raised (None when there is none)."""
    return _State.received


def check() -> None:
    """Raise :class:`Interrupted` for a signal that arrived and was not raised yet."""
    if _State.received is not None and _State.depth == 0:
        raise Interrupted(_State.received)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold signals while the block runs; raise the first one when it ends (not on errors)."""
    check()
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    check()


def hold() -> None:
    """Hold every later signal for good (while the command prints its last line)."""
    _State.depth += 1


def point(name: str) -> None:
    """A named moment for the test hook :data:`HOOK_ENV` (a no-op unless it names ``name``)."""
    wanted = os.environ.get(HOOK_ENV, "")
    where, _, which = wanted.partition(":")
    if where == name and which in signal.Signals.__members__:
        os.kill(os.getpid(), signal.Signals[which])


class SignalGuard:
    """Turn SIGINT/SIGTERM/SIGHUP into :class:`Interrupted` while installed, or hold them
    while :meth:`deferred` runs; :meth:`restore` puts back the handlers it replaced.

    Scoped to one block (a dataset folder being built, :mod:`posgen.store.safety`),
    where :func:`install` is for the whole command.
    """

    def __init__(self) -> None:
        self.deferring = False
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        # Remembered as well as raised: Python swallows exceptions raised inside __del__
        # and weakref callbacks, where a handler can run, so the commit checks it again.
        self.received = self.received or signum
        if not self.deferring:
            raise Interrupted(signum)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # handlers can only be set from the main thread; errors still clean up
        for signum in CAUGHT_SIGNALS:
            self.previous[signum] = signal.signal(signum, self.handle)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    @contextmanager
    def deferred(self, completed: bool = True) -> Iterator[None]:
        """Hold signals back for the duration; raise the first one received, before or after
        (``completed``: whether the target is complete once the block has run)."""
        if self.received is not None:
            raise Interrupted(self.received)
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.received is not None:
            raise Interrupted(self.received, completed=completed)
