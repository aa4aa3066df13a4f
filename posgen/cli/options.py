"""The flags the commands share, spelled once (the help text the command's own), and
:class:`PathArg`, the path type they all take.

>>> path_problem("out/" + "a" * 300)
'has a name of 300 bytes; the file system allows 255'
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from posgen.errors import not_utf8, shown
from posgen.ops import op_names
from posgen.spec import BenchmarkSpec, resolve_benchmark
from posgen.store.formats import FORMATS
from posgen.tasks import TASKS

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def path_problem(value: str) -> str | None:
    """Why ``value`` cannot name a file (not UTF-8, a name longer than the nearest existing
    folder allows), or ``None``."""
    raw = os.fsencode(value)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"is {not_utf8(raw, error)}"
    path, limit = Path(value), 255
    for folder in (path.parent, *path.parent.parents):
        try:
            limit = os.pathconf(folder, "PC_NAME_MAX")
            break
        except (OSError, ValueError):
            continue
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            return f"has a name of {len(os.fsencode(part))} bytes; the file system allows {limit}"
    return None


class PathArg(click.Path):
    """``click.Path`` that also refuses non-UTF-8 paths and over-long names."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str | os.PathLike) and str(value) != "-":
            problem = path_problem(os.fspath(value))
            if problem is not None:
                self.fail(f"'{shown(os.fspath(value), 60)}' {problem}", param, ctx)
        return super().convert(value, param, ctx)


class FiniteFloat(click.FloatRange):
    """``click.FloatRange`` that refuses ``nan`` and ``inf`` (which no range check catches).

    >>> FiniteFloat(min=0).convert("nan", None, None)
    Traceback (most recent call last):
    ...
    click.exceptions.BadParameter: 'nan' is not a finite number.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class TaskChoice(click.Choice):
    """``--task``: the tasks registered when the command line is parsed (plugins too)."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(TASKS)

    @choices.setter
    def choices(self, value: object) -> None:
        pass


SPEC_FLAGS = ("modulus", "near", "far", "op", "train_length", "test_length", "train_size",
              "val_size", "test_size", "seeding", "seed", "op_key")  # fmt: skip


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


def data_option(help: str = "Dataset folder written by `posgen generate`.") -> Decorator:
    return click.option(
        "--data", required=True, type=PathArg(file_okay=False, path_type=Path), help=help
    )


def out_option(help: str, *, folder: bool, required: bool = True) -> Decorator:
    kind = PathArg(file_okay=not folder, dir_okay=folder, path_type=Path)
    return click.option("--out", required=required, type=kind, help=help)


def json_option(help: str, *, stdout: bool = False) -> Decorator:
    kind = PathArg(dir_okay=False, allow_dash=stdout, path_type=Path)
    return click.option("--json", "json_out", type=kind, help=help)


def plot_option(help: str) -> Decorator:
    kind = PathArg(dir_okay=False, path_type=Path)
    return click.option("--plot", "plot_out", type=kind, help=help)


def force_option(
    help: str = "Run even when the estimate (rows x length x bytes) exceeds the free disk or 24 h.",
) -> Decorator:
    return click.option("--force", is_flag=True, help=help)


def quiet_option(help: str = "Print nothing on success.") -> Decorator:
    return click.option("-q", "--quiet", is_flag=True, help=help)


def storage_option(help: str) -> Decorator:
    return click.option(
        "--format",
        "storage",
        type=click.Choice(list(FORMATS)),
        default="parquet",
        show_default=True,
        help=help,
    )


def benchmark_from_options(
    spec_file: Path | None = None, tasks: tuple[str, ...] = (), **fields: Any
) -> BenchmarkSpec:
    """The benchmark of ``--spec`` and ``--task``, the spec flags given overriding it."""
    overrides = {
        name: list(value) if name == "test_length" else value
        for name, value in fields.items()
        if name in SPEC_FLAGS and value not in (None, ())
    }
    return resolve_benchmark(spec_file, tasks, overrides)
