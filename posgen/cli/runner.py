"""One runner for every command that writes: the checks made before anything is written
(:func:`check_dataset_target`, :func:`check_run_target`, :func:`refuse_unwritable`,
:func:`output_problems`: never over an input, twice, or inside a dataset), the write under a
progress bar (:meth:`DatasetRun.write`), and what a failure left (:func:`reported`: an
``OSError`` becomes one :class:`~posgen.errors.RunError` line; a signal stays
:class:`~posgen.signals.Interrupted`, with what was left said after it).

The disk estimate sums rows x length x bytes per token over every split (1 byte for
m <= 256, else 2; a probe split adds a probed position, 4 B, and a far-rule answer). The
paper preset (3 configs; train 10,000 x 64, validation, test and probe 1,000 x 256 each)::

    3 x (10,000 x 64 + 1,000 x 256 + 1,000 x 256 + 1,000 x 256 x (1 + 4 + 1)) B = 8,064,000 B

>>> from posgen.spec import default_benchmark
>>> estimate = estimate_benchmark(default_benchmark())
>>> estimate.tokens, estimate.raw_bytes, estimate.largest
(4224000, 8064000, 'recursive/probe: 1,000 rows x 256 tokens x 6 B')
>>> output_problems({"--out": Path("r.md"), "--json": Path("./r.md")}, {})
['--out r.md and --json r.md name the same file; give each output its own name']
>>> DatasetRun(Path("out/ds")).left()
'no partial dataset was left; out/ds was not created'
>>> DatasetRun(Path("out/ds"), part=(1, 4)).left()
'part 1/4 was not finished; rerun it to write it'
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Generic, TypeVar

import click

from posgen import signals
from posgen.errors import (
    RunError,
    UsageError,
    UsageProblems,
    human_bytes,
    human_seconds,
    os_error_problem,
    shown,
)
from posgen.signals import Interrupted
from posgen.spec import BenchmarkSpec, is_probe_split
from posgen.store.formats import Progress
from posgen.store.layout import MANIFEST_NAME
from posgen.store.safety import OutputExistsError, WriteFailed, check_target, recover
from posgen.store.writer import check_part_target
from posgen.train import TRAIN_HINT

T = TypeVar("T")
Left = Callable[[bool], str]
"""What a failed or stopped run left, given whether its target was complete already."""


# --- estimates: refuse runs that cannot fit on disk or would take absurdly long -------

PLANNING_RATE = 5_000_000
"""Tokens per second assumed for the estimate: the slowest whole-pipeline rate (generate,
encode, write, fsync) seen on a shared 2-core machine, so estimates err on the long side."""
MAX_SECONDS = 24 * 3600
"""Runs estimated to take longer than this are refused without ``--force``."""


@dataclass(frozen=True)
class Estimate:
    """What a benchmark costs: tokens, raw bytes and planned seconds."""

    tokens: int
    raw_bytes: int
    splits: int
    largest: str

    @property
    def seconds(self) -> float:
        """Planned run time at :data:`PLANNING_RATE`."""
        return self.tokens / PLANNING_RATE

    @property
    def formula(self) -> str:
        """The estimate spelled out, e.g. ``9 splits of rows x length x bytes, largest ...``."""
        return f"sum over {self.splits} splits of rows x length x bytes; largest {self.largest}"


def estimate_benchmark(bench: BenchmarkSpec) -> Estimate:
    """Tokens and raw bytes of every split of every config of ``bench``."""
    tokens = raw = 0
    largest, largest_bytes, splits = "", -1, 0
    for config, spec in bench.configs.items():
        for split in (*spec.split_names, *spec.probe_names):
            rows, length = spec.split_size(split), spec.split_length(split)
            per_token = spec.token_bytes
            if is_probe_split(split):  # at most one probed position (4 B) and answer a token
                per_token += 4 + spec.token_bytes
            size = rows * length * per_token
            tokens += rows * length
            raw += size
            splits += 1
            if size > largest_bytes:
                largest_bytes = size
                largest = f"{config}/{split}: {rows:,} rows x {length:,} tokens x "
                largest += f"{per_token} B"
    return Estimate(tokens=tokens, raw_bytes=raw, splits=splits, largest=largest)


def existing_ancestor(path: Path) -> Path:
    """The nearest path at or above ``path`` that exists (where the output will live)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor)


def free_bytes(path: Path) -> int:
    """Bytes available to this user on the file system that will hold ``path``."""
    base = existing_ancestor(path)
    return shutil.disk_usage(base if base.is_dir() else base.parent).free


def refusals(bench: BenchmarkSpec, out: Path) -> list[str]:
    """Why ``bench`` should not be generated into ``out`` (empty when it may).

    One line per reason, each with the estimate, ending in how to override it.
    """
    estimate = estimate_benchmark(bench)
    lines = []
    where = existing_ancestor(out)
    free = free_bytes(out)
    if estimate.raw_bytes > free:
        lines.append(
            f"{out} would need about {human_bytes(estimate.raw_bytes)} "
            f"({estimate.raw_bytes:,} bytes: {estimate.formula}) but only "
            f"{human_bytes(free)} are free on {where}; pass --force to try anyway"
        )
    if estimate.seconds > MAX_SECONDS:
        lines.append(
            f"generating {estimate.tokens:,} tokens would take about "
            f"{human_seconds(estimate.seconds)} at {PLANNING_RATE / 1e6:.0f} M tokens/s "
            f"(limit {human_seconds(MAX_SECONDS)}; {estimate.formula}); "
            "pass --force to run it anyway"
        )
    return lines


# --- outputs: never over an input, twice, or inside a dataset ---------------------------


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _streamed(path: Path) -> bool:
    if str(path) == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def dataset_holding(path: Path) -> Path | None:
    """The dataset folder (it holds ``posgen.json``) that ``path`` is in or is, if any."""
    real = Path(_real(path))
    for folder in (real, *real.parents):
        if (folder / MANIFEST_NAME).is_file():
            return folder
    return None


def output_problems(
    outputs: Mapping[str, Path | None], inputs: Mapping[str, Iterable[Path]]
) -> list[str]:
    """Why these outputs may not be written (empty when they may): one line each.

    ``outputs`` maps a flag to the path given (None: not given); ``inputs`` maps what is
    read (a flag, or a description such as ``a run's scores.json``) to the paths read.
    """
    lines = []
    given = {flag: Path(path) for flag, path in outputs.items() if path is not None}
    files = {flag: path for flag, path in given.items() if not _streamed(path)}
    first: dict[str, str] = {}
    for flag, path in files.items():
        real = _real(path)
        if real in first:
            other = first[real]
            lines.append(
                f"{other} {shown(given[other])} and {flag} {shown(path)} name the same file; "
                "give each output its own name"
            )
        first.setdefault(real, flag)
    read = {_real(path): (what, path) for what, paths in inputs.items() for path in paths}
    for flag, path in files.items():
        if _real(path) in read:
            what, source = read[_real(path)]
            lines.append(
                f"{flag} {shown(path)} is {what} {shown(source)}, which this command reads; "
                "choose another output"
            )
            continue
        dataset = dataset_holding(path)
        if dataset is not None:
            lines.append(
                f"{flag} {shown(path)} is inside the dataset folder {shown(dataset)}; write "
                "outside it (a dataset holds only what its manifest lists)"
            )
    return lines


# --- the runner: checks, the write, what a failure left --------------------------------


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
        raise RunError(f"{describe(error)}; {left(False)}") from None


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
    """Refuse a target no folder can be created at, found by creating a file in the nearest
    existing folder above it: exit 2 when the path given cannot be used (a file in the way,
    no permission), 1 when the file system failed (a read-only mount, an I/O error)."""
    base = existing_ancestor(Path(out).parent)
    if not base.is_dir():
        raise UsageProblems([f"{flag}cannot create {out}: {base} is a file, not a folder; "
                             "nothing was written"])  # fmt: skip
    try:
        with tempfile.TemporaryFile(dir=base, prefix=".posgen-probe-"):
            pass
    except OSError as error:
        reason = str(error.strerror or error)
        line = f"{flag}cannot create {out}: {base} is not writable "
        line += f"({reason[:1].lower()}{reason[1:]}); nothing was written"
        raise (
            UsageProblems([line]) if os_error_problem(error)[1] == 2 else RunError(line)
        ) from None


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


def require_extra() -> None:
    """:class:`UsageProblems` unless torch and transformers can be imported."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise UsageProblems([TRAIN_HINT]) from None


def progress_bar(total: int, label: str, quiet: bool = False) -> Any:
    """A click progress bar on stderr, drawn only on a terminal and never when ``quiet``."""
    if quiet or not sys.stderr.isatty():
        return nullcontext(SimpleNamespace(update=lambda tokens: None))
    return click.progressbar(
        length=total, label=label, file=sys.stderr, show_eta=True, show_percent=True
    )
