"""``posgen publish SPEC --out DIR``: generate, validate and card a benchmark for the Hub."""

from __future__ import annotations

import time
from pathlib import Path

import click

from posgen.cli.common import RunFailure, UsageProblems, benchmark_from_options, progress_bar
from posgen.cli.guard import os_error_problem
from posgen.cli.paths import PathArg
from posgen.errors import PosgenError
from posgen.publish import (
    HubUnavailable,
    hub_token,
    publish_benchmark,
    push_folder,
    scoring_baselines,
)
from posgen.store.formats import FORMATS
from posgen.store.targets import OutputExistsError, check_target


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
@click.option(
    "--out",
    required=True,
    type=PathArg(file_okay=False, path_type=Path),
    help="Folder to create: every config, the card README.md and posgen.json.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset at --out.")
@click.option(
    "--push",
    "repo_id",
    metavar="REPO_ID",
    help="Upload the folder to this Hub dataset repo (needs HF_TOKEN).",
)
@click.option("--baselines", is_flag=True, help="Add baseline scores (posgen.scoring).")
@click.option(
    "--format",
    "storage",
    type=click.Choice(list(FORMATS)),
    default="parquet",
    show_default=True,
    help="parquet (the Hub's) or arrow (Arrow IPC save_to_disk folders).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def publish_command(
    spec_file: Path,
    out: Path,
    overwrite: bool,
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
    problems = []
    try:
        check_target(out, overwrite)
    except OutputExistsError as error:
        problems.append(str(error))
    token = None
    if repo_id is not None:
        try:
            token = hub_token()
        except HubUnavailable as error:
            problems.append(str(error))
    if problems:
        raise UsageProblems(problems)
    total = sum(spec.total_tokens for spec in bench.configs.values())
    started = time.perf_counter()
    try:
        with progress_bar(total, f"publishing {bench.name}", quiet) as bar:
            published = publish_benchmark(
                bench,
                out,
                overwrite=overwrite,
                baselines=scoring_baselines if baselines else None,
                progress=bar.update,
                storage=storage,
            )
    except PosgenError:
        raise
    except ImportError as error:
        raise UsageProblems([f"{error.name or error} is not available: {error}"]) from None
    except OSError as error:
        raise RunFailure(
            f"writing {out} failed: {os_error_problem(error)[0]}; nothing was written"
        ) from None
    seconds = time.perf_counter() - started
    if not quiet:
        checks = len(published.report.checks)
        click.echo(
            f"published {out} ({', '.join(published.manifest.configs)}): {total:,} tokens, "
            f"{checks} checks passed, in {seconds:.2f} s"
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
