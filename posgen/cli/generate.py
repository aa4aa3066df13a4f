"""``posgen generate``: spec in, dataset folder out (whole, or one part of N)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from posgen.card import unvalidated_card
from posgen.cli.common import (
    RunFailure,
    UsageProblems,
    benchmark_from_options,
    progress_bar,
    spec_options,
)
from posgen.cli.paths import PathArg
from posgen.errors import UsageError
from posgen.resources import estimate_benchmark, free_bytes, human_bytes, refusals, unwritable
from posgen.signals import Interrupted
from posgen.store.durable import WriteFailed
from posgen.store.formats import FORMATS, check_features
from posgen.store.layout import DEFAULT_SHARD_BYTES, parse_part, part_of, plan_benchmark
from posgen.store.parts import check_part_target
from posgen.store.recovery import recover
from posgen.store.targets import check_target
from posgen.store.writer import write_dataset


@click.command(
    epilog="""\b
Examples:
  posgen generate --out out/posgen-v1 --spec task_specs/posgen-v1.toml
  posgen generate --out out/cot --task cot -m 17 -k 3 -j 1 --test-length 256 --test-length 512
  posgen generate --out out/paper --spec task_specs/paper.toml --overwrite
  posgen generate --out out/big --spec big.toml --num-proc 2 --shard-mb 256
  posgen generate --out out/big --spec big.toml --part 3/8   # job 3 of 8; any order
"""
)
@spec_options
@click.option(
    "--out",
    required=True,
    type=PathArg(file_okay=False, path_type=Path),
    help="Folder to create (load it with datasets.load_dataset(OUT, CONFIG)).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset at --out.")
@click.option(
    "--force",
    is_flag=True,
    help="Run even when the estimate (rows x length x bytes) exceeds the free disk or 24 h.",
)
@click.option(
    "--num-proc", type=int, default=1, show_default=True, help="Processes writing shards."
)
@click.option(
    "--part",
    "part",
    metavar="I/N",
    help="Write only part I of N (every N-th Parquet file); the last part to finish writes "
    "the manifest. Parts in one folder equal a single run byte for byte.",
)
@click.option("--shard", "shard_part", metavar="I/N", hidden=True, help="Deprecated: --part.")
@click.option(
    "--shard-mb",
    type=int,
    default=DEFAULT_SHARD_BYTES // 2**20,
    show_default=True,
    help="Raw token MiB per Parquet file.",
)
@click.option(
    "--format",
    "storage",
    type=click.Choice(list(FORMATS)),
    default="parquet",
    show_default=True,
    help="parquet (load_dataset, the Hub) or arrow: Arrow IPC save_to_disk folders per config "
    "(datasets.load_from_disk(OUT/CONFIG)), several times faster to write.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def generate(
    out: Path,
    overwrite: bool,
    force: bool,
    num_proc: int,
    part: str | None,
    shard_part: str | None,
    shard_mb: int,
    storage: str,
    quiet: bool,
    **fields: Any,
) -> None:
    """Generate POSGEN splits (train, validation, test) that `datasets` loads.

    One config per task. Flags override the fields of --spec; without --spec the
    paper's setup with disjoint seeding is used.
    """
    bench = benchmark_from_options(fields.pop("spec_file"), fields.pop("tasks"), fields)
    problems = []
    if num_proc < 1:
        problems.append(f"--num-proc must be >= 1, got {num_proc}")
    if shard_mb < 1:
        problems.append(f"--shard-mb must be >= 1, got {shard_mb}")
    flag = "--part"
    if shard_part is not None:
        click.echo("note: --shard is deprecated; use --part (same meaning)", err=True)
        if part is not None and part != shard_part:
            problems.append("--shard and --part disagree; give --part only")
        part, flag = part or shard_part, "--shard"
    index, count = 0, 1
    if part is not None:
        try:
            index, count = parse_part(part)
        except ValueError as error:
            problems.append(f"{flag}: {error}")
    if problems:
        raise UsageProblems(problems)
    check_features(storage, None if part is None else (index, count), flag)
    if part is None:
        check_target(out, overwrite)
    else:
        check_part_target(out, bench)
    blocked = unwritable(out)
    if blocked:
        raise RunFailure(f"{blocked}; nothing was written")
    refused = [] if force else refusals(bench, out)
    if refused:
        raise UsageProblems(refused)
    total = sum(
        bench.configs[s.config].split_length(s.split) * s.rows
        for s in part_of(plan_benchmark(bench, shard_mb * 2**20), index, count)
    )
    started = time.perf_counter()
    label = f"generating {bench.name}" + (f" part {index}/{count}" if part else "")
    try:
        if part is None:
            for action in recover(out):
                click.echo(f"note: {action}", err=True)
        with progress_bar(total, label, quiet) as bar:
            manifest = write_dataset(
                bench,
                out,
                storage=storage,
                part=None if part is None else (index, count),
                overwrite=overwrite,
                shard_bytes=shard_mb * 2**20,
                num_proc=num_proc,
                progress=bar.update,
                finish=unvalidated_card,
            )
    except Interrupted as stop:
        state = f"{out} was already complete" if stop.completed else _untouched(out, overwrite)
        raise RunFailure(f"{stop}; {state}", stop.exit_code) from None
    except UsageError:
        raise
    except OSError as error:
        raise RunFailure(f"{_failure(error, bench, out)}; {_untouched(out, overwrite)}") from None
    seconds = time.perf_counter() - started
    if quiet:
        return
    rate = (
        f"{total:,} tokens in {seconds:.2f} s ({total / max(seconds, 1e-9) / 1e6:.1f} M tokens/s)"
    )
    if part is not None and manifest is None:
        click.echo(f"wrote part {index}/{count} into {out}: {rate}; other parts still missing")
    elif part is not None:
        click.echo(f"wrote part {index}/{count} into {out} and finished it: {rate}")
    else:
        click.echo(f"wrote {out} ({', '.join(manifest.configs)}): {rate}")


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
