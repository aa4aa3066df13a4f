"""The flags several commands share, spelled once: ``--spec`` and the spec fields
(:func:`spec_options`), and ``--data``, ``--config``, ``--split``, ``--out``, ``--json``,
``--plot``, ``--overwrite``, ``--force`` and ``-q``.

Each is a decorator factory; what a flag means differs a little per command, so the help
text is the command's own:

>>> import click
>>> @click.command()
... @config_option("Config to score.")
... @quiet_option()
... def show(config, quiet):
...     pass
>>> [param.opts for param in show.params]
[['--config'], ['-q', '--quiet']]
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from posgen.cli.paths import PathArg
from posgen.ops import op_names
from posgen.store.formats import FORMATS
from posgen.tasks import TASKS

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

DATA_HELP = "Dataset folder written by `posgen generate`."
QUIET_HELP = "Print nothing on success."
OVERWRITE_HELP = "Replace an existing dataset at --out."
FORCE_HELP = "Run even when the estimate (rows x length x bytes) exceeds the free disk or 24 h."


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


def data_option(help: str = DATA_HELP) -> Decorator:
    """``--data FOLDER`` (required): the dataset folder a command reads."""
    return click.option(
        "--data", required=True, type=PathArg(file_okay=False, path_type=Path), help=help
    )


def config_option(help: str) -> Decorator:
    """``--config NAME``: one config (task) of the dataset."""
    return click.option("--config", help=help)


def split_option(help: str, default: str | None = None) -> Decorator:
    """``--split NAME``, shown with its default when it has one."""
    return click.option("--split", default=default, show_default=default is not None, help=help)


def out_option(help: str, *, folder: bool, required: bool = True) -> Decorator:
    """``--out PATH``: the folder (``folder=True``) or the file the command writes."""
    kind = PathArg(file_okay=not folder, dir_okay=folder, path_type=Path)
    return click.option("--out", required=required, type=kind, help=help)


def json_option(help: str, *, stdout: bool = False) -> Decorator:
    """``--json FILE`` (``json_out``); with ``stdout``, ``-`` is standard output."""
    kind = PathArg(dir_okay=False, allow_dash=stdout, path_type=Path)
    return click.option("--json", "json_out", type=kind, help=help)


def plot_option(help: str) -> Decorator:
    """``--plot FILE`` (``plot_out``): a figure (the ``plot`` extra)."""
    kind = PathArg(dir_okay=False, path_type=Path)
    return click.option("--plot", "plot_out", type=kind, help=help)


def overwrite_option(help: str = OVERWRITE_HELP) -> Decorator:
    """``--overwrite``: replace what ``--out`` names."""
    return click.option("--overwrite", is_flag=True, help=help)


def force_option(help: str = FORCE_HELP) -> Decorator:
    """``--force``: run although the up-front estimate would refuse the run."""
    return click.option("--force", is_flag=True, help=help)


def quiet_option(help: str = QUIET_HELP) -> Decorator:
    """``-q``/``--quiet``."""
    return click.option("-q", "--quiet", is_flag=True, help=help)


def storage_option(help: str) -> Decorator:
    """``--format`` of a written dataset (``parquet`` or ``arrow``), as ``storage``."""
    return click.option(
        "--format",
        "storage",
        type=click.Choice(list(FORMATS)),
        default="parquet",
        show_default=True,
        help=help,
    )
