"""``posgen publish SPEC --out DIR``: generate, validate and card a benchmark for the Hub."""

from __future__ import annotations

from pathlib import Path

import click

from posgen.cli.common import RunFailure, UsageProblems, benchmark_from_options
from posgen.cli.options import (
    force_option,
    out_option,
    overwrite_option,
    quiet_option,
    storage_option,
)
from posgen.cli.paths import PathArg
from posgen.cli.runner import DatasetRun, check_dataset_target
from posgen.publish import (
    HubUnavailable,
    hub_token,
    publish_benchmark,
    push_folder,
    scoring_baselines,
)


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
@overwrite_option()
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
    bench = benchmark_from_options(spec_file, (), {})
    problems, token = [], None
    if repo_id is not None:
        try:
            token = hub_token()
        except HubUnavailable as error:
            problems.append(str(error))
    check_dataset_target(bench, out, overwrite=overwrite, force=force, problems=problems)
    total = sum(spec.total_tokens for spec in bench.configs.values())
    try:
        written = DatasetRun(out, overwrite, bench=bench).write(
            lambda progress: publish_benchmark(
                bench,
                out,
                overwrite=overwrite,
                baselines=scoring_baselines if baselines else None,
                progress=progress,
                storage=storage,
            ),
            f"publishing {bench.name}",
            total,
            quiet,
        )
    except ImportError as error:
        raise UsageProblems([f"{error.name or error} is not available: {error}"]) from None
    if not quiet:
        checks = len(written.value.report.checks)
        click.echo(
            f"published {out} ({', '.join(written.value.manifest.configs)}): {total:,} tokens, "
            f"{checks} checks passed, in {written.seconds:.2f} s"
        )
    if repo_id is not None and token is not None:
        try:
            url = push_folder(out, repo_id, token)
        except HubUnavailable as error:
            raise UsageProblems([str(error)]) from None
        except Exception as error:  # httpx, hub and OS errors share no base: one line, exit 1
            raise RunFailure(f"pushing {out} to {repo_id} failed: {error}") from None
        if not quiet:
            click.echo(f"pushed {out} to {repo_id}: {url}")
