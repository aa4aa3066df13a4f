"""``posgen generate``: spec in, dataset folder out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from posgen.atomic import Interrupted, OutputExistsError, WriteFailed, check_target, recover
from posgen.cli.common import (
    RunFailure,
    UsageProblems,
    benchmark_from_options,
    progress_bar,
    spec_options,
)
from posgen.resources import estimate_benchmark, free_bytes, human_bytes, refusals, unwritable
from posgen.writer import write_benchmark


@click.command(
    epilog="""\b
Examples:
  posgen generate --out out/posgen-v1 --spec task_specs/posgen-v1.toml
  posgen generate --out out/cot --task cot -m 17 -k 3 -j 1 --test-length 256 --test-length 512
  posgen generate --out out/paper --spec task_specs/paper.toml --overwrite
"""
)
@spec_options
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to create (load it with datasets.load_dataset(OUT, CONFIG)).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset at --out.")
@click.option(
    "--force",
    is_flag=True,
    help="Run even when the estimate (rows x length x bytes) exceeds the free disk or 24 h.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def generate(out: Path, overwrite: bool, force: bool, quiet: bool, **fields: Any) -> None:
    """Generate POSGEN splits (train, validation, test) as Parquet that `datasets` loads.

    One config per task. Flags override the fields of --spec; without --spec the
    paper's setup with disjoint seeding is used.
    """
    bench = benchmark_from_options(fields.pop("spec_file"), fields.pop("tasks"), fields)
    try:
        check_target(out, overwrite)
    except OutputExistsError as error:
        raise UsageProblems([str(error)]) from None
    blocked = unwritable(out)
    if blocked:
        raise RunFailure(f"{blocked}; nothing was written")
    refused = [] if force else refusals(bench, out)
    if refused:
        raise UsageProblems(refused)
    total = sum(spec.total_tokens for spec in bench.configs.values())
    started = time.perf_counter()
    try:
        for action in recover(out):
            click.echo(f"note: {action}", err=True)
        with progress_bar(total, f"generating {bench.name}", quiet) as bar:
            manifest = write_benchmark(bench, out, overwrite=overwrite, progress=bar.update)
    except OutputExistsError as error:
        raise UsageProblems([str(error)]) from None
    except Interrupted as stop:
        state = f"{out} was already complete" if stop.completed else _untouched(out, overwrite)
        raise RunFailure(f"{stop}; {state}", stop.exit_code) from None
    except OSError as error:
        raise RunFailure(f"{_failure(error, bench, out)}; {_untouched(out, overwrite)}") from None
    seconds = time.perf_counter() - started
    if not quiet:
        configs = ", ".join(manifest["configs"])
        click.echo(
            f"wrote {out} ({configs}): {total:,} tokens in {seconds:.2f} s "
            f"({total / max(seconds, 1e-9) / 1e6:.1f} M tokens/s)"
        )


def _untouched(out: Path, overwrite: bool) -> str:
    """What is left at ``out`` after a failed run (the build folder is always removed)."""
    if overwrite and out.exists():
        return f"no partial dataset was left; the previous dataset at {out} is unchanged"
    return f"no partial dataset was left; {out} was not created"


def _failure(error: OSError, bench: Any, out: Path) -> str:
    """Which path failed, why, and how much space the run needed."""
    if isinstance(error, WriteFailed):
        message = str(error)
    else:
        where = f" {error.filename}" if error.filename else f" {out}"
        message = f"writing{where} failed: {error.strerror or error}"
    needed = estimate_benchmark(bench).raw_bytes
    try:
        free = f", {human_bytes(free_bytes(out))} free now"
    except OSError:
        free = ""
    return f"{message} (the dataset needs about {human_bytes(needed)} uncompressed{free})"
