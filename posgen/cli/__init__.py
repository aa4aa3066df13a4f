"""The ``posgen`` command line: one module per command, registered on :data:`main`."""

from __future__ import annotations

import click

from posgen import __version__
from posgen.cli.baseline import baseline_command
from posgen.cli.card import card_command
from posgen.cli.generate import generate
from posgen.cli.merge import merge
from posgen.cli.publish import publish_command
from posgen.cli.score import score_command
from posgen.cli.spec_cmd import spec_command
from posgen.cli.validate import validate_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="posgen")
def main() -> None:
    """POSGEN: fixed-difficulty synthetic tasks for position-embedding generalization.

    \b
    Examples:
      posgen generate --spec task_specs/posgen-v1.toml --out out/posgen-v1
      posgen spec --spec task_specs/paper.toml
      posgen publish task_specs/posgen-v1.toml --out out/hub/posgen-v1
      posgen card out/posgen-v1
    """


main.add_command(generate)
main.add_command(merge)
main.add_command(spec_command)
main.add_command(score_command)
main.add_command(baseline_command)
main.add_command(card_command)
main.add_command(publish_command)
main.add_command(validate_command)
