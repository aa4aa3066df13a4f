"""The ``posgen`` command line: the click group :data:`main` and its commands, which live by
what they do (:mod:`~posgen.cli.dataset`, :mod:`~posgen.cli.score`, ``train``, ``sweep``,
``results``); the flags, checks and writes they share are in
:mod:`~posgen.cli.shared`. A command's module is imported when that command runs (or
``--help`` lists it), so ``posgen generate`` never loads the training side."""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Any

import click
from pydantic import ValidationError

from posgen import __version__, signals
from posgen.errors import PosgenError, debugging, error_exit, shown
from posgen.signals import Interrupted

MAX_ERROR_CHARS = 1000
"""Longest ``error:`` line printed: a value given by the user is never echoed whole."""
EXPECTED = (Interrupted, KeyboardInterrupt, PosgenError, ValidationError, ImportError,
            click.ClickException, click.Abort)  # fmt: skip
"""Errors that are the command's answer: never a traceback, even with ``--debug``."""


COMMANDS = {
    "generate": "posgen.cli.dataset:generate",
    "merge": "posgen.cli.dataset:merge",
    "spec": "posgen.cli.dataset:spec_command",
    "card": "posgen.cli.dataset:card_command",
    "publish": "posgen.cli.dataset:publish_command",
    "validate": "posgen.cli.dataset:validate_command",
    "score": "posgen.cli.score:score_command",
    "baseline": "posgen.cli.score:baseline_command",
    "train": "posgen.cli.train:train_command",
    "results": "posgen.cli.results:results_command",
    "sweep": "posgen.cli.sweep:sweep_command",
}
"""Each command's name and where it lives (``module:attribute``)."""


class PosgenGroup(click.Group):
    """A click group whose every way to end is an exit status and ``error:`` lines
    (:func:`posgen.errors.error_exit`); ``--debug`` adds the traceback of an unexpected one.
    Signals caught by the entry point are checked before and after the command."""

    debug = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """The command ``name``, its module imported now (``None``: no such command)."""
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """As click resolves it, with "Did you mean" drawn from every command, loaded or not."""
        if args[0] not in COMMANDS and not args[0].startswith("-") and not ctx.resilient_parsing:
            raise click.exceptions.NoSuchCommand(args[0], possibilities=list(COMMANDS), ctx=ctx)
        return super().resolve_command(ctx, args)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        PosgenGroup.debug = False
        try:
            signals.check()  # a signal that arrived while the commands were imported
            signals.point("cli")
            result = super().main(*args, standalone_mode=False, **kwargs)
            signals.check()  # a signal Python swallowed (in __del__, say) still ends the run
        except SystemExit:
            raise
        except click.exceptions.NoArgsIsHelpError as bare:  # `posgen` alone: its help, exit 2
            signals.hold()
            bare.show()
            sys.exit(bare.exit_code)
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
