"""``posgen card DIR``: re-render the data card of an existing dataset folder."""

from __future__ import annotations

from pathlib import Path

import click

from posgen import publish
from posgen.card import write_card
from posgen.cli.common import RunFailure, UsageProblems
from posgen.cli.guard import os_error_problem
from posgen.cli.options import quiet_option
from posgen.cli.paths import PathArg
from posgen.errors import PosgenError
from posgen.store.dataset import Dataset


@click.command(
    "card",
    epilog="""\b
Examples:
  posgen card out/posgen-v1
  posgen card out/posgen-v1 --no-validate
  posgen card out/posgen-v1 --baselines
""",
)
@click.argument("folder", type=PathArg(path_type=Path))
@click.option(
    "--validate/--no-validate",
    "run_validation",
    default=True,
    show_default=True,
    help="Validate the folder and put the report in the card (else the card says it was not).",
)
@click.option("--baselines", is_flag=True, help="Add baseline scores (posgen.scoring).")
@quiet_option()
def card_command(folder: Path, run_validation: bool, baselines: bool, quiet: bool) -> None:
    """Re-render FOLDER/README.md from its manifest, its files and a validation report.

    Exits 1 (after writing the card, which lists the failures) when validation fails.
    """
    manifest = Dataset.open(folder).manifest  # not a dataset: exit 2; a damaged manifest: exit 1
    try:
        report = publish.validate_folder(folder) if run_validation else None
        scores = None
        if baselines:
            scores = {
                config: publish.scoring_baselines(folder, config) for config in manifest.configs
            }
        path = write_card(folder, report, scores)  # the manifest as it is now
    except ImportError as error:
        raise UsageProblems([f"{error.name or error} is not available: {error}"]) from None
    except PosgenError:
        raise
    except OSError as error:
        raise RunFailure(
            f"the card of {folder} was not written: {os_error_problem(error)[0]}"
        ) from None
    if report is not None and not report.ok:
        failed = sum(not check.ok for check in report.checks)
        raise RunFailure(f"wrote {path}, but validation failed: {failed} check(s) (see the card)")
    if not quiet:
        state = "validated" if report is not None else "not validated"
        click.echo(f"wrote {path} ({state})")
