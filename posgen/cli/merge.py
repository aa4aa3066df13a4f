"""``posgen merge``: finish a folder written by ``posgen generate --shard I/N`` parts."""

from __future__ import annotations

from pathlib import Path

import click

from posgen.card import unvalidated_card
from posgen.cli.common import RunFailure
from posgen.cli.guard import os_error_problem
from posgen.cli.paths import PathArg
from posgen.errors import PosgenError
from posgen.store.parts import merge_parts


@click.command(
    epilog="""\b
Examples:
  posgen merge out/big                       # parts were written into (or copied to) out/big
  posgen merge out/big part0/ part1/ part2/  # move the parts' files into out/big first
"""
)
@click.argument("out", type=PathArg(file_okay=False, path_type=Path))
@click.argument("parts", nargs=-1, type=PathArg(exists=True, file_okay=False, path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def merge(out: Path, parts: tuple[Path, ...], quiet: bool) -> None:
    """Combine the parts of a sharded run into one dataset folder.

    The result is byte-identical to a single-process `posgen generate` of the same spec.
    """
    try:
        manifest = merge_parts(out, list(parts), unvalidated_card)
    except PosgenError:
        raise
    except OSError as error:
        raise RunFailure(f"merging into {out} failed: {os_error_problem(error)[0]}") from None
    if not quiet:
        files = len(manifest.files())
        click.echo(f"finished {out}: {files} files, manifest and card written")
