"""The ``posgen`` command line: one module per command, registered on :data:`main`."""

from __future__ import annotations

import sys
from typing import Any

import click

from posgen import __version__, signals
from posgen.cli.baseline import baseline_command
from posgen.cli.card import card_command
from posgen.cli.generate import generate
from posgen.cli.guard import debugging, os_error_problem, traceback_text, unexpected_problem
from posgen.cli.merge import merge
from posgen.cli.publish import publish_command
from posgen.cli.results import results_command
from posgen.cli.score import score_command
from posgen.cli.spec_cmd import spec_command
from posgen.cli.sweep import sweep_command
from posgen.cli.train import train_command
from posgen.cli.validate import validate_command
from posgen.errors import PosgenError, shown
from posgen.signals import Interrupted

MAX_ERROR_CHARS = 1000
"""Longest ``error:`` line printed: a value given by the user is never echoed whole."""
INTERRUPTED_STATE = "no partial output was left"
"""What a command stopped by a signal left, unless it says more itself
(:attr:`posgen.signals.Interrupted.left`, set by :func:`posgen.cli.runner.leaving`; every
output is written whole or not at all)."""


def say(line: str) -> None:
    """Print one ``error:`` line on stderr, bounded and on one line."""
    click.echo(f"error: {shown(line, MAX_ERROR_CHARS)}", err=True)


class PosgenGroup(click.Group):
    """A click group whose errors are single ``error: ...`` lines on stderr.

    The one place errors become exit statuses: a :class:`posgen.errors.PosgenError` prints
    its lines and exits with its ``exit_code`` (2 usage, 1 damaged data or a failed run);
    click's own usage errors (a flag of the wrong type, an unknown choice or command)
    become one line that names the flag and where to look for help (exit 2).
    Operating-system errors and anything unexpected that reaches this far are turned into
    one line too (:mod:`posgen.cli.guard`); ``--debug`` shows the traceback.
    """

    debug = False

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        PosgenGroup.debug = False
        previous = signals.install()
        try:
            self._run(*args, **kwargs)
        finally:
            signals.restore(previous)

    def _run(self, *args: Any, **kwargs: Any) -> None:
        """Run the command; every way it ends becomes an exit status (and one line)."""
        try:
            signals.check()  # a signal that arrived while the commands were imported
            signals.point("cli")
            result = super().main(*args, standalone_mode=False, **kwargs)
            signals.check()  # a signal Python swallowed (in __del__, say) still ends the run
        except SystemExit:
            raise
        except BaseException as error:
            signals.hold()  # a second signal must not interrupt the report of the first
            sys.exit(self._report(error))
        signals.hold()
        sys.exit(result if isinstance(result, int) else 0)

    def _report(self, error: BaseException) -> int:
        """Print the one line for ``error``; its exit status."""
        if isinstance(error, Interrupted):
            say(f"{error}; {error.left or INTERRUPTED_STATE}")
            return error.exit_code
        if isinstance(error, KeyboardInterrupt) or (
            isinstance(error, click.Abort) and isinstance(error.__context__, KeyboardInterrupt)
        ):  # SIGINT before posgen's handler was installed
            say(f"interrupted by SIGINT; {INTERRUPTED_STATE}")
            return 130
        if isinstance(error, PosgenError):
            for line in error.printed:
                say(line)
            return error.exit_code
        if isinstance(error, click.UsageError):
            where = f" (see '{error.ctx.command_path} -h')" if error.ctx is not None else ""
            say(f"{' '.join(error.format_message().split())}{where}")
            return error.exit_code
        if isinstance(error, click.ClickException):
            error.show()
            return error.exit_code
        if isinstance(error, click.Abort):
            click.echo("error: aborted", err=True)
            return 1
        if debugging(PosgenGroup.debug):
            click.echo(traceback_text(error), err=True)
        if isinstance(error, OSError):
            line, code = os_error_problem(error)
            say(line)
            return code
        say(unexpected_problem(error, PosgenGroup.debug))
        return 1


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


main.add_command(generate)
main.add_command(merge)
main.add_command(spec_command)
main.add_command(score_command)
main.add_command(baseline_command)
main.add_command(card_command)
main.add_command(publish_command)
main.add_command(validate_command)
main.add_command(train_command)
main.add_command(results_command)
main.add_command(sweep_command)
