"""``posgen merge``: finish a folder written by ``posgen generate --part I/N`` runs."""

from __future__ import annotations

from pathlib import Path

import click

from posgen.card import unvalidated_card
from posgen.cli.options import quiet_option
from posgen.cli.paths import PathArg
from posgen.cli.runner import os_failure, reported
from posgen.store.writer import write_dataset


@click.command(
    epilog="""\b
Examples:
  posgen merge out/big                       # parts were written into (or copied to) out/big
  posgen merge out/big part0/ part1/ part2/  # move the parts' files into out/big first
"""
)
@click.argument("out", type=PathArg(file_okay=False, path_type=Path))
@click.argument("parts", nargs=-1, type=PathArg(exists=True, file_okay=False, path_type=Path))
@quiet_option()
def merge(out: Path, parts: tuple[Path, ...], quiet: bool) -> None:
    """Combine the parts of a sharded run into one dataset folder.

    The result is byte-identical to a single-process `posgen generate` of the same spec.
    """
    with reported(
        lambda completed: _left(out, completed), lambda e: os_failure(e, f"merging into {out}")
    ):
        manifest = write_dataset(None, out, merge=parts, finish=unvalidated_card)
    if not quiet:
        files = len(manifest.files())
        click.echo(f"finished {out}: {files} files, manifest and card written")


def _left(out: Path, completed: bool) -> str:
    """What a stopped or failed merge left: no file is lost, each part's files are in
    ``OUT/.posgen-parts`` once moved, or still in their part folder."""
    if completed:
        return f"{out} was already complete"
    return f"{out} is not finished; each part's files are in it or still in their part folder"
