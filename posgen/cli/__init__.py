"""The ``posgen`` command line: the click group :data:`main` and its commands, which live by
what they do (:mod:`~posgen.cli.dataset`, :mod:`~posgen.cli.score`, ``train``, ``sweep``,
``results``); the flags, checks and writes they share are in
:mod:`~posgen.cli.shared`."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click
from pydantic import ValidationError

from posgen import __version__, signals
from posgen.cli.dataset import (
    card_command,
    generate,
    merge,
    publish_command,
    spec_command,
    validate_command,
)
from posgen.cli.results import results_command
from posgen.cli.score import baseline_command, score_command
from posgen.cli.sweep import sweep_command
from posgen.cli.train import train_command
from posgen.errors import PosgenError, debugging, error_exit, shown
from posgen.signals import Interrupted

MAX_ERROR_CHARS = 1000
"""Longest ``error:`` line printed: a value given by the user is never echoed whole."""
EXPECTED = (Interrupted, KeyboardInterrupt, PosgenError, ValidationError, ImportError,
            click.ClickException, click.Abort)  # fmt: skip
"""Errors that are the command's answer: never a traceback, even with ``--debug``."""


class PosgenGroup(click.Group):
    """A click group whose every way to end is an exit status and ``error:`` lines
    (:func:`posgen.errors.error_exit`); ``--debug`` adds the traceback of an unexpected one.
    Signals caught by the entry point are checked before and after the command."""

    debug = False

    def main(self, *args: Any, **kwargs: Any) -> Any:
        PosgenGroup.debug = False
        try:
            signals.check()  # a signal that arrived while the commands were imported
            signals.point("cli")
            result = super().main(*args, standalone_mode=False, **kwargs)
            signals.check()  # a signal Python swallowed (in __del__, say) still ends the run
        except SystemExit:
            raise
        except BaseException as error:
            signals.hold()  # a second signal must not interrupt the report of the first
            if not isinstance(error, EXPECTED) and debugging(PosgenGroup.debug):
                click.echo("".join(traceback.format_exception(error)).rstrip(), err=True)
            lines, code = error_exit(error, PosgenGroup.debug)
            for line in lines:
                click.echo(f"error: {shown(line, MAX_ERROR_CHARS)}", err=True)
            sys.exit(code)
        signals.hold()
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=PosgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="posgen")
@click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, param, value: setattr(PosgenGroup, "debug", bool(value)),
    help="Show the traceback of an unexpected error (also: POSGEN_DEBUG=1).",
)
def main() -> None:
    """POSGEN: fixed-difficulty synthetic tasks for position-embedding generalization.

    \b
    Examples:
      posgen generate --spec task_specs/posgen-v1.toml --out out/posgen-v1
      posgen spec --spec task_specs/paper.toml
      posgen publish task_specs/posgen-v1.toml --out out/hub/posgen-v1
      posgen card out/posgen-v1
      posgen train --data out/posgen-v1 --config cot --pe resonance --out runs/cot-res
      posgen sweep grids/results.toml --out runs/results
    """


for command in (
    generate,
    merge,
    spec_command,
    score_command,
    baseline_command,
    card_command,
    publish_command,
    validate_command,
    train_command,
    results_command,
    sweep_command,
):
    main.add_command(command)
