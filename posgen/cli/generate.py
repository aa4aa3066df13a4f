"""``posgen generate``: spec in, dataset folder out (whole, or one part of N)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from posgen.card import unvalidated_card
from posgen.cli.common import UsageProblems, benchmark_from_options
from posgen.cli.options import (
    force_option,
    out_option,
    overwrite_option,
    quiet_option,
    spec_options,
    storage_option,
)
from posgen.cli.runner import DatasetRun, check_dataset_target
from posgen.store.formats import check_features
from posgen.store.layout import DEFAULT_SHARD_BYTES, parse_part, part_of, plan_benchmark
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
@out_option("Folder to create (load it with datasets.load_dataset(OUT, CONFIG)).", folder=True)
@overwrite_option()
@force_option()
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
@click.option(
    "--shard-mb",
    type=int,
    default=DEFAULT_SHARD_BYTES // 2**20,
    show_default=True,
    help="Raw token MiB per Parquet file.",
)
@storage_option(
    "parquet (load_dataset, the Hub) or arrow: Arrow IPC save_to_disk folders per config "
    "(datasets.load_from_disk(OUT/CONFIG)), several times faster to write."
)
@quiet_option()
def generate(
    out: Path,
    overwrite: bool,
    force: bool,
    num_proc: int,
    part: str | None,
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
    index, count = 0, 1
    if part is not None:
        try:
            index, count = parse_part(part)
        except ValueError as error:
            problems.append(f"--part: {error}")
    if problems:
        raise UsageProblems(problems)
    piece = None if part is None else (index, count)
    check_features(storage, piece)
    check_dataset_target(bench, out, overwrite=overwrite, force=force, part=piece)
    total = sum(
        bench.configs[s.config].split_length(s.split) * s.rows
        for s in part_of(plan_benchmark(bench, shard_mb * 2**20), index, count)
    )
    label = f"generating {bench.name}" + (f" part {index}/{count}" if part else "")
    written = DatasetRun(out, overwrite, piece, bench).write(
        lambda progress: write_dataset(
            bench,
            out,
            storage=storage,
            part=piece,
            overwrite=overwrite,
            shard_bytes=shard_mb * 2**20,
            num_proc=num_proc,
            progress=progress,
            finish=unvalidated_card,
        ),
        label,
        total,
        quiet,
    )
    if quiet:
        return
    rate, manifest = written.rate(total), written.value
    if part is not None and manifest is None:
        click.echo(f"wrote part {index}/{count} into {out}: {rate}; other parts still missing")
    elif part is not None:
        click.echo(f"wrote part {index}/{count} into {out} and finished it: {rate}")
    else:
        click.echo(f"wrote {out} ({', '.join(manifest.configs)}): {rate}")
