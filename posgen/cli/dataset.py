"""The commands that make or check a dataset folder: ``generate`` (whole, or one part of N),
``merge`` (finish the parts), ``spec`` (show the resolved spec), ``publish`` (generate,
validate and card for the Hub), ``card`` (re-render a card) and ``validate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from posgen import publish
from posgen.card import card_path, unvalidated_card, write_card
from posgen.cli import (
    SPEC_FLAGS,
    DatasetRun,
    PathArg,
    benchmark_from_options,
    check_dataset_target,
    estimate_benchmark,
    force_option,
    json_option,
    os_failure,
    out_option,
    quiet_option,
    refuse_outputs,
    refuse_unwritable,
    reported,
    spec_options,
    storage_option,
)
from posgen.errors import PosgenError, RunError, UsageError, UsageProblems, os_error_problem
from posgen.publish import (
    HubUnavailable,
    hub_token,
    publish_benchmark,
    push_folder,
    repo_id_problems,
)
from posgen.spec import TaskSpec
from posgen.store.dataset import Dataset, card_problems
from posgen.store.formats import check_features
from posgen.store.manifest import (
    DEFAULT_SHARD_BYTES,
    MANIFEST_NAME,
    PARTS_DIR,
    parse_part,
    part_of,
    plan_benchmark,
)
from posgen.store.safety import write_atomically
from posgen.store.writer import write_dataset
from posgen.validate import AuditThresholds, validate


@click.command(
    epilog="""\b
Examples:
  posgen generate --out out/posgen-v1 --spec task_specs/posgen-v1.toml
  posgen generate --out out/cot --task cot -m 17 -k 3 -j 1 --test-length 256 --test-length 512
  posgen generate --out out/paper --spec task_specs/paper.toml --overwrite
  posgen generate --out out/big --spec big.toml --num-proc 2 --shard-mb 256
  posgen generate --out out/big --spec big.toml --part 3/8   # job 3 of 0..7; any order
"""
)
@spec_options
@out_option("Folder to create (load it with datasets.load_dataset(OUT, CONFIG)).", folder=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset at --out.")
@force_option()
@click.option(
    "--num-proc", type=int, default=1, show_default=True, help="Processes writing shards."
)
@click.option(
    "--part",
    "part",
    metavar="I/N",
    help="Write only part I of N (I from 0 to N-1; every N-th Parquet file); the last part to "
    "finish writes the manifest. Parts in one folder equal a single run byte for byte.",
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
    bench = benchmark_from_options(**fields)
    problems = []
    if num_proc < 1:
        problems.append(f"--num-proc must be >= 1, got {num_proc}")
    if shard_mb < 1:
        problems.append(f"--shard-mb must be >= 1, got {shard_mb}")
    piece = None
    if part is not None:
        try:
            piece = parse_part(part)
        except ValueError as error:
            problems.append(f"--part: {error}")
    if problems:
        raise UsageProblems(problems)
    index, count = piece or (0, 1)
    check_features(storage, piece)
    spec_file = fields.get("spec_file")
    check_dataset_target(
        bench, out, overwrite=overwrite, force=force, part=piece, spec_file=spec_file
    )
    total = sum(
        bench.configs[s.config].split_length(s.split) * s.rows
        for s in part_of(plan_benchmark(bench, shard_mb * 2**20), index, count)
    )
    label = f"generating {bench.name}" + (f" part {index}/{count}" if part else "")
    manifest, seconds = DatasetRun(out, bench, overwrite, piece).write(
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
    speed = total / max(seconds, 1e-9) / 1e6
    rate = f"{total:,} tokens in {seconds:.2f} s ({speed:.1f} M tokens/s)"
    if part is not None and manifest is None:
        click.echo(f"wrote part {index}/{count} into {out}: {rate}; other parts still missing")
    elif part is not None:
        click.echo(f"wrote part {index}/{count} into {out} and finished it: {rate}")
    else:
        click.echo(f"wrote {out} ({', '.join(manifest.configs)}): {rate}")


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

    def left(completed: bool) -> str:  # no file is lost: each is in OUT or its part folder
        if completed:
            return f"{out} was already complete"
        return f"{out} is not finished; each part's files are in it or still in their part folder"

    refuse_outputs({"OUT": out}, {"PARTS": parts}, datasets=("OUT",))
    finished = (out / MANIFEST_NAME).is_file() and not (out / PARTS_DIR).exists()
    with reported(left, lambda error: os_failure(error, f"merging into {out}")):
        manifest = write_dataset(None, out, merge=parts, finish=unvalidated_card)
    if not quiet and finished and not parts:  # only checked: nothing was there to merge
        click.echo(
            f"{out} was already complete: {len(manifest.files())} files checked, none written"
        )
    elif not quiet:
        click.echo(f"finished {out}: {len(manifest.files())} files, manifest and card written")


@click.command(
    "spec",
    epilog="""\b
Examples:
  posgen spec --spec task_specs/posgen-v1.toml
  posgen spec --task recursive -m 23 --test-length 512
""",
)
@spec_options
def spec_command(**fields: Any) -> None:
    """Print the resolved benchmark spec as JSON, with spec ids, rows and tokens."""
    bench = benchmark_from_options(**fields)
    body = {
        "name": bench.name,
        "spec_id": bench.spec_id,
        "configs": {
            name: {
                "spec_id": spec.spec_id,
                "spec": spec.canonical(),
                "rows": spec.total_rows,
                "tokens": spec.total_tokens,
                "seed_space": spec.seed_space_text.replace(",", ""),
            }
            for name, spec in bench.configs.items()
        },
    }
    click.echo(json.dumps(body, indent=2))


@click.command(
    "publish",
    epilog="""\b
Examples:
  posgen publish task_specs/posgen-v1.toml --out out/hub/posgen-v1
  posgen publish task_specs/paper.toml --out out/hub/paper --overwrite
  HF_TOKEN=... posgen publish task_specs/posgen-v1.toml --out out/hub/posgen-v1 --push me/posgen
""",
)
@click.argument("spec_file", metavar="SPEC", type=PathArg(path_type=Path))
@out_option("Folder to create: every config, the card README.md and posgen.json.", folder=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset at --out.")
@force_option()
@click.option(
    "--push",
    "repo_id",
    metavar="REPO_ID",
    help="Upload the folder to this Hub dataset repo (needs HF_TOKEN).",
)
@click.option("--baselines", is_flag=True, help="Add baseline scores (posgen.scoring).")
@storage_option("parquet (the Hub's) or arrow (Arrow IPC save_to_disk folders).")
@quiet_option()
def publish_command(
    spec_file: Path,
    out: Path,
    overwrite: bool,
    force: bool,
    repo_id: str | None,
    baselines: bool,
    storage: str,
    quiet: bool,
) -> None:
    """Generate every config of SPEC, validate it, and write one Hub-ready folder.

    Data that fails validation is never published: the folder is not created (or not
    replaced) and the failing checks are printed.
    """
    bench = benchmark_from_options(spec_file)
    problems, token = [], None
    if repo_id is not None:
        problems += repo_id_problems(repo_id)
        try:
            token = hub_token()
        except HubUnavailable as error:
            problems.append(str(error))
    check_dataset_target(
        bench, out, overwrite=overwrite, force=force, problems=problems, spec_file=spec_file
    )
    total = estimate_benchmark(bench).tokens  # every split's, the probe splits' too
    published, seconds = DatasetRun(out, bench, overwrite).write(
        lambda progress: publish_benchmark(
            bench,
            out,
            overwrite=overwrite,
            baselines=publish.scoring_baselines if baselines else None,
            progress=progress,
            storage=storage,
        ),
        f"publishing {bench.name}",
        total,
        quiet,
    )
    if not quiet:
        click.echo(
            f"published {out} ({', '.join(published.manifest.configs)}): {total:,} tokens, "
            f"{len(published.report.checks)} checks passed, in {seconds:.2f} s"
        )
    if repo_id is not None and token is not None:
        try:
            url = push_folder(out, repo_id, token)
        except (UsageError, RunError):  # publish.PushFailed says what the repo holds
            raise
        except Exception as error:  # httpx, hub and OS errors share no base: one line, exit 1
            raise RunError(f"pushing {out} to {repo_id} failed: {error}") from None
        if not quiet:
            bench = published.manifest.benchmark  # as the commit message names it
            click.echo(
                f"pushed {out} (POSGEN {bench.name}, spec {bench.spec_id}) to {repo_id}: {url}"
            )


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
    refuse_unwritable(card_path(folder))  # a link in the card's place, a read-only folder
    try:
        if run_validation and card_problems(folder, manifest):  # this command's to replace
            write_card(folder, manifest=manifest)  # first: validation judges the new card
        report = publish.validate_folder(folder) if run_validation else None
        scores = (
            {c: publish.scoring_baselines(folder, c) for c in manifest.configs}
            if baselines
            else None
        )
        path = write_card(folder, report, scores)  # the manifest as it is now
    except PosgenError:
        raise
    except OSError as error:
        raise RunError(
            f"the card of {folder} was not written: {os_error_problem(error)[0]}"
        ) from None
    if report is not None and not report.ok:
        failed = sum(not check.ok for check in report.checks)
        raise RunError(f"wrote {path}, but validation failed: {failed} check(s) (see the card)")
    if not quiet:
        state = "validated" if report is not None else "not validated"
        click.echo(f"wrote {path} ({state})")


def _given_spec(fields: dict[str, Any], config: str | None) -> TaskSpec | None:
    """The spec named by --spec/--task/field flags, or None when no flag was given."""
    names = ("spec_file", "tasks", *SPEC_FLAGS)
    if all(fields.get(name) in (None, ()) for name in names):
        return None
    bench = benchmark_from_options(**fields)
    if len(bench.configs) == 1:
        return next(iter(bench.configs.values()))
    if config is not None and config in bench.configs:
        return bench.configs[config]
    names = ", ".join(bench.configs)
    raise UsageProblems(
        [f"the spec names {len(bench.configs)} configs ({names}); pick one with --task or --config"]
    )


@click.command(
    "validate",
    epilog="""\b
Examples:
  posgen validate out/posgen-v1
  posgen validate out/posgen-v1 --config cot --split test --json report.json
  posgen validate shard.parquet --task recursive -m 17 -k 3 -j 1 --split test
  posgen validate out/paper --max-shortcut-share 0.01
""",
)
@click.argument("source", type=PathArg(exists=True, path_type=Path))
@click.option("--config", help="Check only this config.")
@click.option(
    "--split",
    help="Check only this split (train, validation, test, test_<L'>, probe, probe_<L'>).",
)
@json_option("Write the full report as JSON to this file ('-': stdout).", stdout=True)
@click.option("-v", "--verbose", is_flag=True, help="List every check, not only the failures.")
@click.option(
    "--max-balance-tv",
    type=click.FloatRange(0, 1),
    help="Fail the audit when a position's target TV distance from uniform is larger.",
)
@click.option(
    "--max-shortcut-share",
    type=click.FloatRange(0, 1),
    help="Fail the audit when a shortcut covers a larger share of the ID or OOD targets: "
    "copy-the-period, a k- or w-token context copy, the linear rule, positions with a "
    "shorter effective look-back than the task's rule, or targets whose far operands the "
    "k + 2 tokens before them pin down (question-consistency look-back).",
)
@click.option(
    "--min-operand-sensitivity",
    type=click.FloatRange(0, 1),
    help="Fail the audit when fewer single-operand changes change the target.",
)
@spec_options
def validate_command(
    source: Path,
    config: str | None,
    split: str | None,
    json_out: Path | None,
    verbose: bool,
    max_balance_tv: float | None,
    max_shortcut_share: float | None,
    min_operand_sensitivity: float | None,
    **fields: Any,
) -> None:
    """Check a POSGEN dataset: integrity, schema, every target against its window,
    the window rule, split hygiene, and an audit of the targets.

    SOURCE is a dataset folder (with posgen.json), or a folder or .parquet/.arrow file
    without one; then give the spec with --spec or the spec flags. Exit status: 0 when
    every check passes, 1 when any fails, 2 for bad input.
    """
    spec_file = fields.get("spec_file")
    read = {"SOURCE": [source], "--spec": [spec_file] if spec_file is not None else []}
    refuse_outputs({"--json": json_out}, read)
    thresholds = AuditThresholds(
        max_balance_tv=max_balance_tv,
        max_shortcut_share=max_shortcut_share,
        min_operand_sensitivity=min_operand_sensitivity,
    )
    report = validate(source, _given_spec(fields, config), config, split, thresholds=thresholds)
    body = json.dumps(report.to_dict(), indent=2)
    if json_out is not None and str(json_out) == "-":
        click.echo(body)
    else:
        if json_out is not None:
            write_atomically(json_out, (body + "\n").encode())  # WriteFailed: exit 1
        click.echo(report.summary(verbose=verbose))
    sys.exit(0 if report.ok else 1)
