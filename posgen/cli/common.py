"""Pieces shared by the commands: the benchmark the spec flags name, errors that exit
cleanly, and the progress bar (the shared flags themselves: :mod:`posgen.cli.options`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from posgen.cli.options import SPEC_FLAGS
from posgen.errors import RunError, UsageError, problem_lines
from posgen.spec import BenchmarkSpec
from posgen.spec_files import resolve_benchmark
from posgen.train import TRAIN_HINT


class UsageProblems(UsageError):
    """Bad input: printed one problem per line, exit status 2, no traceback."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.problems = list(lines)

    @property
    def lines(self) -> list[str]:
        return [" ".join(line.split()) for line in self.problems]


class RunFailure(RunError):
    """The run failed (I/O, a full disk): one line, exit status 1. A signal is never one:
    it stays :class:`~posgen.signals.Interrupted` up to :class:`posgen.cli.PosgenGroup`."""


def benchmark_from_options(
    spec_file: Path | None, tasks: tuple[str, ...], fields: dict[str, Any]
) -> BenchmarkSpec:
    """Resolve the benchmark, turning every spec problem into :class:`UsageProblems`."""
    overrides = {
        SPEC_FLAGS[name]: value
        for name, value in fields.items()
        if name in SPEC_FLAGS and value is not None and value != ()
    }
    if "test_length" in overrides:
        overrides["test_length"] = list(overrides["test_length"])
    try:
        return resolve_benchmark(spec_file, tasks, overrides)
    except ValidationError as error:
        raise UsageProblems(problem_lines(error)) from None


def require_extra() -> None:
    """:class:`UsageProblems` unless torch and transformers can be imported."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise UsageProblems([TRAIN_HINT]) from None


class _NoBar:
    """Stands in for a progress bar where none is drawn."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n_steps: int) -> None:
        return None


def progress_bar(total: int, label: str, quiet: bool = False) -> Any:
    """A click progress bar on stderr, drawn only on a terminal and never when ``quiet``."""
    if quiet or not sys.stderr.isatty():
        return _NoBar()
    return click.progressbar(
        length=total, label=label, file=sys.stderr, show_eta=True, show_percent=True
    )
