"""Pieces shared by the commands: spec flags, and errors that exit cleanly."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from posgen.cli.paths import PathArg
from posgen.errors import RunError, UsageError, problem_lines
from posgen.ops import op_names
from posgen.spec import BenchmarkSpec
from posgen.spec_files import resolve_benchmark
from posgen.tasks import TASKS


class UsageProblems(UsageError):
    """Bad input: printed one problem per line, exit status 2, no traceback."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.problems = list(lines)

    @property
    def lines(self) -> list[str]:
        return [" ".join(line.split()) for line in self.problems]


class RunFailure(RunError):
    """The run failed (I/O, disk, a signal): one line, exit status 1 (or 128 + signal)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TaskChoice(click.Choice):
    """``--task`` choices: the registered tasks when the command line is parsed, so a task
    registered with :func:`posgen.tasks.register_task` is accepted too."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(TASKS)

    @choices.setter
    def choices(self, value: object) -> None:
        pass


# flag name -> spec field
SPEC_FLAGS: dict[str, str] = {
    "modulus": "modulus",
    "near": "near",
    "far": "far",
    "op": "op",
    "train_length": "train_length",
    "test_length": "test_length",
    "train_size": "train_size",
    "val_size": "val_size",
    "test_size": "test_size",
    "seeding": "seeding",
    "seed": "seed",
    "op_key": "op_key",
}


def spec_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--spec``, ``--task`` and one flag per spec field (flags override the file)."""
    options = [
        click.option(
            "--spec",
            "spec_file",
            type=PathArg(dir_okay=False, path_type=Path),
            help="Spec file (.toml, .yaml, .json): a task spec or a benchmark of configs.",
        ),
        click.option(
            "--task",
            "tasks",
            multiple=True,
            type=TaskChoice(),
            help="Task to include, repeatable (one config each). Default: all in the spec.",
        ),
        click.option("-m", "--modulus", type=int, help="Vocabulary size m. [17]"),
        click.option("-k", "--near", type=int, help="Near operands k. [3]"),
        click.option("-j", "--far", type=int, help="Far operands j. [1]"),
        click.option(
            "--op", type=str, help=f"Generation function h: {', '.join(op_names())}. [mod_addition]"
        ),
        click.option("--op-key", type=int, help="Key of a keyed op (keyed_hash). [0]"),
        click.option("--train-length", type=int, help="Train row length L. [64]"),
        click.option(
            "--test-length",
            type=int,
            multiple=True,
            help="Test row length L', repeatable: extra lengths add test_<L'> splits. [256]",
        ),
        click.option("--train-size", type=int, help="Train rows. [10000]"),
        click.option("--val-size", type=int, help="Validation rows. [1000]"),
        click.option("--test-size", type=int, help="Rows of each test split. [1000]"),
        click.option(
            "--seeding",
            type=click.Choice(["disjoint", "paper"]),
            help="disjoint (distinct windows, no overlap) or paper (authors' code). [disjoint]",
        ),
        click.option("--seed", type=int, help="Seed of the disjoint windows. [0]"),
    ]
    for option in reversed(options):
        function = option(function)
    return function


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
