"""One runner for the commands that write a dataset or a run folder (``generate``,
``publish``, ``merge``, ``train``, ``sweep``): the checks made before anything is written,
the write with its progress bar, and every way it can fail as one line that says what was
left behind.

- Checks (:func:`check_dataset_target`): the target may be (re)created (``--overwrite``), or
  take this part of a run (``--part``); a folder can be created there at all; the spec fits
  on the disk and in a day (:mod:`posgen.cli.preflight`; ``--force`` runs anyway); then the
  leftovers of killed runs next to it are cleaned up, each with a ``note:`` line. A run
  folder (:func:`check_run_target`) must be new, creatable and outside any dataset.
- The write (:meth:`DatasetRun.write`) runs under the progress bar.
- Failures (:func:`reported`): an ``OSError`` on the way becomes :class:`RunFailure` (exit 1)
  naming the path and what was left; a signal stays :class:`~posgen.signals.Interrupted`,
  which :class:`posgen.cli.PosgenGroup` alone turns into ``128 + signal``: the runner only
  adds what was left (:attr:`~posgen.signals.Interrupted.left`; :func:`interrupted` for a
  signal the command's workers were stopped by).

>>> DatasetRun(Path("out/ds")).left()
'no partial dataset was left; out/ds was not created'
>>> DatasetRun(Path("out/ds"), part=(1, 4)).left()
'part 1/4 was not finished; rerun it to write it'
>>> DatasetRun(Path("out/ds")).left(completed=True)
'out/ds was already complete'
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import click

from posgen import signals
from posgen.cli.common import RunFailure, UsageProblems, progress_bar
from posgen.cli.guard import os_error_problem
from posgen.cli.outputs import output_problems
from posgen.cli.preflight import estimate_benchmark, free_bytes, refusals, unwritable
from posgen.errors import UsageError
from posgen.signals import Interrupted
from posgen.spec import BenchmarkSpec
from posgen.store.formats import Progress
from posgen.store.safety import OutputExistsError, WriteFailed, check_target, recover
from posgen.store.writer import check_part_target
from posgen.units import human_bytes

T = TypeVar("T")
Left = Callable[[bool], str]
"""What a failed or stopped run left, given whether its target was complete already."""


def note(line: str) -> None:
    """One ``note:`` line on stderr."""
    click.echo(f"note: {line}", err=True)


def os_failure(error: OSError, doing: str) -> str:
    """Which path failed and why (``doing`` failed, unless :class:`WriteFailed` says it).

    >>> os_failure(OSError(28, "No space left on device", "out/x"), "merging into out")
    'merging into out failed: out/x: no space left on device'
    """
    if isinstance(error, WriteFailed):
        return str(error)
    return f"{doing} failed: {os_error_problem(error)[0]}"


@contextmanager
def reported(left: Left, describe: Callable[[OSError], str]) -> Iterator[None]:
    """Run the write; a signal gets ``left`` said after it, an ``OSError`` becomes one line.

    A usage error (the target appeared meanwhile, say) passes as it is.
    """
    try:
        yield
    except Interrupted as stop:
        if stop.left is None:
            stop.left = left(stop.completed)
        raise
    except UsageError:
        raise
    except OSError as error:
        raise RunFailure(f"{describe(error)}; {left(False)}") from None


def interrupted(signum: int, left: str) -> Interrupted:
    """The :class:`Interrupted` to raise for signal ``signum``, saying what was left.

    >>> import signal
    >>> stop = interrupted(signal.SIGTERM, "2 trainings stopped")
    >>> stop.exit_code, f"{stop}; {stop.left}"
    (143, 'interrupted by SIGTERM; 2 trainings stopped')
    """
    stop = Interrupted(signum)
    stop.left = left
    return stop


def check_dataset_target(
    bench: BenchmarkSpec,
    out: Path,
    *,
    overwrite: bool = False,
    force: bool = False,
    part: tuple[int, int] | None = None,
    problems: list[str] | None = None,
) -> None:
    """Every check made before a dataset is written into ``out``; raise on the first kind
    of problem found, with ``problems`` (the command's own) said with the target's."""
    problems = list(problems or [])
    try:
        if part is None:
            check_target(out, overwrite)
        else:
            check_part_target(out, bench)
    except OutputExistsError as error:
        problems.append(str(error))
    if problems:
        raise UsageProblems(problems)
    refuse_unwritable(out)
    refused = [] if force else refusals(bench, out)
    if refused:
        raise UsageProblems(refused)
    if part is None:
        for action in recover(out):
            note(action)


def check_run_target(out: Path) -> None:
    """Refuse a run folder ``out`` that exists, sits inside a dataset folder or cannot be
    created (one line each; :func:`refuse_unwritable`)."""
    if os.path.lexists(out):
        raise UsageProblems([f"--out {out} exists; choose a new run folder"])
    problems = output_problems({"--out": out}, {})
    if problems:
        raise UsageProblems(problems)
    refuse_unwritable(out, "--out: ")


def refuse_unwritable(out: Path, flag: str = "") -> None:
    """Refuse a target no folder can be created at, before anything is read or written:
    exit 2 when the path given cannot be used, 1 when the file system failed
    (:class:`~posgen.cli.preflight.Blocked`)."""
    blocked = unwritable(out)
    if blocked is None:
        return
    line = f"{flag}{blocked.line}; nothing was written"
    if blocked.exit_code == 2:
        raise UsageProblems([line])
    raise RunFailure(line)


@dataclass(frozen=True)
class Written(Generic[T]):
    """What a write returned, and how long it took."""

    value: T
    seconds: float

    def rate(self, tokens: int) -> str:
        """``'1,000 tokens in 0.50 s (0.0 M tokens/s)'``."""
        per_second = tokens / max(self.seconds, 1e-9) / 1e6
        return f"{tokens:,} tokens in {self.seconds:.2f} s ({per_second:.1f} M tokens/s)"


@dataclass(frozen=True)
class DatasetRun:
    """A dataset written into ``out`` (or part ``(I, N)`` of one), and what a failure left."""

    out: Path
    overwrite: bool = False
    part: tuple[int, int] | None = None
    bench: BenchmarkSpec | None = None

    def left(self, completed: bool = False) -> str:
        """What is at ``out`` after a failed or stopped run (a build folder never is)."""
        if completed:
            return f"{self.out} was already complete"
        if self.part is not None:
            return f"part {self.part[0]}/{self.part[1]} was not finished; rerun it to write it"
        if self.overwrite and self.out.exists():
            return f"no partial dataset was left; the previous dataset at {self.out} is unchanged"
        return f"no partial dataset was left; {self.out} was not created"

    def failure(self, error: OSError) -> str:
        """Which path failed, why, and how much space the run needed."""
        message = os_failure(error, f"writing {self.out}")
        if self.bench is None:
            return message
        needed = estimate_benchmark(self.bench).raw_bytes
        try:
            free = f", {human_bytes(free_bytes(self.out))} free now"
        except OSError:
            free = ""
        return f"{message} (the dataset needs about {human_bytes(needed)} uncompressed{free})"

    def write(
        self, write: Callable[[Progress], T], label: str, total: int, quiet: bool = False
    ) -> Written[T]:
        """Run ``write(progress)`` under a progress bar of ``total`` tokens; every failure
        one line saying what was left."""
        started = time.perf_counter()
        with reported(self.left, self.failure), progress_bar(total, label, quiet) as bar:

            def progress(tokens: int) -> None:
                bar.update(tokens)
                signals.point("progress")

            value = write(progress)
        return Written(value, time.perf_counter() - started)
