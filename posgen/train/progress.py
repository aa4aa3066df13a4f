"""Where an unfinished training stands, readable without torch (``posgen sweep --status``).

Next to its checkpoint (:mod:`posgen.train.checkpoint`) a training keeps ``progress.json``:
the epoch it is in (or would start next), its step, and whether training is done and only
the run folders remain to be written::

    {"epoch": 2, "step": 37, "done": false}
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from posgen.store.layout import hidden_stem

PROGRESS = "progress.json"
RESUME_TAG = ".posgen-resume"
KILL_ENV = "POSGEN_TEST_KILL"
"""``POINT:N:SIGNAL``: send SIGNAL to this process at point N of POINT (tests only);
``SIGNAL@parent`` sends it to the parent (a local sweep) instead and waits for a signal."""

_passes: Counter[str] = Counter()


def resume_folder(out: Path) -> Path:
    """Where ``posgen train --out OUT`` keeps its checkpoint until OUT is written.

    >>> resume_folder(Path("runs/rec-res")).as_posix()
    'runs/.rec-res.posgen-resume'
    """
    out = Path(out)
    return out.with_name(hidden_stem(out.name) + RESUME_TAG)


def kill_point(name: str, number: int | None = None) -> None:
    """Signal this process here if :data:`KILL_ENV` (``POINT:N:SIGNAL``) names this point.

    ``N`` is ``number`` where the point has one (``step``: the run's step, counted across
    resumptions, so a resumed or requeued run is not stopped again), else the count of
    this process's passes through the point.
    """
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    point, count, signame = wanted.split(":")
    if point != name:
        return
    _passes[name] += 1
    if (_passes[name] if number is None else number) == int(count):
        signame, _, whom = signame.partition("@")
        if whom == "parent":
            _signal_parent_and_wait(getattr(signal, signame))
        else:
            os.kill(os.getpid(), getattr(signal, signame))


def _signal_parent_and_wait(signum: int, limit: float = 600.0) -> None:
    """Send ``signum`` to the sweep, wait until it passes the signal back, then take it here.

    The signal the sweep passes back may reach any thread of this process (torch starts
    some); Python runs the handler in the main thread whichever thread took it, so a
    ``sigtimedwait`` in the main thread would miss it. A stand-in handler notes it instead,
    and Python's wakeup file descriptor ends the wait, however early or late the sweep
    answers. A parent that never passes it back ends this process after ``limit`` seconds.
    """
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


def read_progress(folder: Path) -> dict[str, Any] | None:
    """A work folder's ``progress.json`` (None when absent or unreadable); no torch needed."""
    try:
        with open(Path(folder) / PROGRESS, "rb") as handle:
            value = json.loads(handle.read(4096))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
