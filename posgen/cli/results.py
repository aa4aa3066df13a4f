"""``posgen results``: aggregate ``posgen train`` run folders into the results table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from posgen import signals
from posgen.cli import (
    FiniteFloat,
    PathArg,
    json_option,
    out_option,
    plot_option,
    refuse_outputs,
)
from posgen.errors import UsageProblems, counted
from posgen.scoring.plot import plot_problem
from posgen.store.safety import atomic_folder, write_atomically
from posgen.train import FILES
from posgen.train.exports import write_export
from posgen.train.results import (
    ResultsError,
    Run,
    aggregate,
    check_distinct,
    csv_text,
    find_runs,
    plot_results,
    results_markdown,
    run_settings,
    summary_json,
)
from posgen.train.run_record import read_run

EXPORTS = ("eee", "hf")  # formats whose --out is a new folder of files (posgen.train.exports)


@click.command(
    "results",
    epilog="""\b
Examples:
  posgen results runs/ --out RESULTS.md --plot results/curves.png --json results/results.json
  posgen results runs/ --format csv --out results/runs.csv
  posgen results runs/ --format csv --out -
  posgen results runs/posgen-v1/cot --format json --out cot.json
  posgen results runs/ --format eee --out results/eee
  posgen results runs/ --format hf --out results/hub
  posgen results runs/posgen-v1/cot/rope/seed42 runs/posgen-v1/cot/rope/seed49 --out cot.md
""",
)
@click.argument("run_dirs", nargs=-1, required=True, type=PathArg(path_type=Path))
@out_option(
    "File to write (replaced if it exists; - prints it); with --format eee or hf, a new folder "
    "to create.",
    folder=False,
)
@click.option(
    "--format",
    "out_format",
    default="markdown",
    show_default=True,
    type=click.Choice(["markdown", "json", "csv", "eee", "hf"]),
    help="--out's format: the RESULTS.md document, every cell with its curve, one CSV "
    "row per cell, an Every Eval Ever record per cell (OUT/DATA/TASK/PE.json: one entry per "
    "metric and length bucket), or Hugging Face Hub .eval_results/ YAML files per cell "
    "(OUT/DATA/TASK/PE/.eval_results/METRIC.yaml).",
)
@plot_option("Accuracy-vs-position curves (PNG; needs the `plot` extra).")
@json_option("Write the aggregated figures (no curves) as JSON here ('-': stdout).", stdout=True)
@click.option("--command", "command_line", help="Command to credit in the document.")
@click.option("--note", "notes", multiple=True, help="A line about the run, repeatable.")
@click.option(
    "--wall-seconds", type=FiniteFloat(min=0, max=1e9), help="Wall time of the runs to report."
)
def results_command(
    run_dirs: tuple[Path, ...],
    out: Path,
    out_format: str,
    plot_out: Path | None,
    json_out: Path | None,
    command_line: str | None,
    notes: tuple[str, ...],
    wall_seconds: float | None,
) -> None:
    """PEs ranked by OOD accuracy (mean ± std over seeds, effective length) per data folder
    and task, and tables of ID and OOD accuracy.

    RUN_DIRS are run folders written by `posgen train` (their results.json), or folders
    holding them (links followed; each run counts once). Copies of one run are refused,
    never averaged; build folders of killed runs and half-copied folders are skipped with a
    note. No output may name a run's file or another output.
    """
    folder_out, to_stdout = out_format in EXPORTS, str(out) == "-"
    json_stdout = json_out is not None and str(json_out) == "-"
    if folder_out and to_stdout:
        raise UsageProblems([f"--out -: --format {out_format} writes a folder; give its path"])
    if to_stdout and json_stdout:
        raise UsageProblems(["--out - and --json -: one of them may print, not both"])
    if folder_out and os.path.lexists(out):
        new_folder = f"--format {out_format} writes a new folder (nothing was written)"
        raise UsageProblems([f"--out: {out} exists; {new_folder}"])
    if plot_out is not None and (problem := plot_problem(plot_out)) is not None:
        raise UsageProblems([f"--plot: {problem}"])
    folders, skipped = find_runs(run_dirs)
    if not folders:
        raise ResultsError(
            f"no finished run folders in {', '.join(map(str, dict.fromkeys(run_dirs)))}"
        )
    run_files = [folder / name for folder in folders for name in FILES]
    refuse_outputs(
        {"--out": out, "--json": json_out, "--plot": plot_out},
        {"a run's file": run_files, "the run folder": folders},
    )
    for line in skipped:
        click.echo(f"note: {line}", err=True)
    runs = [Run(path, read_run(path)) for path in folders]
    check_distinct(runs)
    results = aggregate(runs)
    plot_link = None if plot_out is None else os.path.relpath(plot_out, out.parent)
    settings = run_settings(runs)
    if out_format == "markdown":
        text = results_markdown(results, settings, command_line, wall_seconds, plot_link, notes)
    elif out_format == "csv":
        text = csv_text(results)
    else:
        whole = {"settings": settings, "results": results}
        text = json.dumps(whole, indent=2, allow_nan=False) + "\n"
    summary = json.dumps(summary_json(results), indent=2, allow_nan=False) + "\n"
    signals.point("results-write")
    if plot_out is not None:  # every file written atomically; WriteFailed: exit 1
        plot_results(results, plot_out)
    if json_stdout:
        click.echo(summary, nl=False)
    elif json_out is not None:
        write_atomically(json_out, summary.encode())
    if folder_out:
        with atomic_folder(out) as build:
            write_export(results, build, out_format)
    elif to_stdout:
        click.echo(text, nl=False)
    else:
        write_atomically(out, text.encode())
    tasks = sum(len(entry["tasks"]) for entry in results.values())
    counts = f"{counted(len(runs), 'run')}, {counted(tasks, 'task')}"
    click.echo(f"{out}: {counts}", err=to_stdout or json_stdout)
