"""``posgen sweep``: train a grid of runs on local workers or a Slurm cluster, resumably."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from posgen.cli import (
    PathArg,
    interrupted,
    out_option,
    refuse_in_the_way,
    refuse_outputs,
    require_extra,
)
from posgen.cli.train import memory_estimate
from posgen.encodings import NO_TABLE
from posgen.errors import RunError, UsageProblems, counted, problem_lines, shown
from posgen.signals import Interrupted
from posgen.store.dataset import Dataset
from posgen.train.config import (
    RunSpec,
    SlurmSettings,
    TrainConfig,
    available_bytes,
    expand,
    jobs_of,
    preset,
    read_grid,
    refusal,
)
from posgen.train.job import check_work
from posgen.train.sweep import RECORD, Sweep, label, run_states

EXECUTORS = ("local", "slurm", "submitit-local")


@click.command(
    "sweep",
    epilog="""\b
Examples:
  posgen sweep grids/results.toml --out runs/results --jobs 2
  posgen sweep --status runs/results
  posgen results runs/results/runs --out RESULTS.md
  posgen sweep grids/results.toml --out /shared/sweep --executor slurm --partition gpu \\
      --time-min 600 --gpus 1 --max-parallel 20
""",
)
@click.argument("grid", required=False, type=PathArg(dir_okay=False, path_type=Path))
@out_option("Sweep folder (made or added to).", folder=True, required=False)
@click.option(
    "--status",
    "status_dir",
    type=PathArg(file_okay=False, path_type=Path),
    help="Print what a sweep folder's runs are doing (done, running, failed, waiting).",
)
@click.option("--json", "as_json", is_flag=True, help="With --status: one JSON object a run.")
@click.option(
    "--executor",
    default="local",
    show_default=True,
    type=click.Choice(EXECUTORS),
    help="local: worker processes here; slurm: a job array (submitit); "
    "submitit-local: the slurm path run here by submitit's local executor.",
)
@click.option(
    "--jobs", type=click.IntRange(1, 1024), help="local: trainings at once. [GPUs present, else 1]"
)
@click.option("--partition", help="slurm: partition. [grid]")
@click.option("--account", help="slurm: account. [grid]")
@click.option("--time-min", type=int, help="slurm: minutes per training. [grid, 240]")
@click.option("--gpus", type=int, help="slurm: GPUs per training. [grid, 1]")
@click.option("--cpus", type=int, help="slurm: CPUs per training. [grid, 2]")
@click.option("--mem-gb", type=int, help="slurm: memory per training in GB. [grid, 16]")
@click.option("--max-parallel", type=int, help="slurm: array elements at once. [grid, 32]")
@click.option("--wait", is_flag=True, help="slurm: wait for the array to finish.")
@click.option(
    "--force",
    is_flag=True,
    help="Train runs that the memory estimate refuses (this machine's memory; slurm: --mem-gb).",
)
def sweep_command(
    grid: Path | None,
    out: Path | None,
    status_dir: Path | None,
    as_json: bool,
    executor: str,
    jobs: int | None,
    wait: bool,
    force: bool,
    **slurm_flags: Any,
) -> None:
    """Train every run of GRID (a grid file) into the sweep folder --out, skipping finished
    runs and resuming interrupted ones from their checkpoints.

    Each run's folder is SWEEP/runs/<hash of its resolved config>; SWEEP/sweep.json lists
    the runs. Position encodings that train alike (rope, yarn, linear and llama3; resonance and
    its evaluation-time variants) share one training.
    """
    if status_dir is not None:
        if grid is not None or out is not None:
            raise UsageProblems(["--status takes only the sweep folder: no GRID, no --out"])
        _print_status(Sweep(status_dir), as_json)
        return
    if grid is None or out is None:
        raise UsageProblems(["give a GRID file and --out SWEEP_DIR, or --status SWEEP_DIR"])
    if as_json:
        raise UsageProblems(["--json: for --status only"])
    refuse_outputs({"--out": out}, {"GRID": [grid]})
    if out.exists() and any(out.iterdir()) and not (out / RECORD).is_file():
        raise UsageProblems([f"--out {out} is a folder but not a sweep folder (no {RECORD})"])
    parts = ("runs", "logs", "work", "failed", "discarded")  # the sweep's own folders
    for part in parts:
        refuse_in_the_way(out / part, out, f"the sweep keeps its {part} folder")
    for folder in (out, *(out / part for part in parts)):  # chmod -R a-w, a read-only mount
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise UsageProblems([f"--out {out}: {folder} is not writable; nothing was run"])
    for work in sorted((out / "work").iterdir()) if (out / "work").is_dir() else []:
        check_work(work, f"--out {out}", "the sweep")  # a training's, before any training
    given = {name: value for name, value in slurm_flags.items() if value is not None}
    if executor == "local" and (given or wait):
        names = [*given, "wait"] if wait else list(given)
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in names)
        raise UsageProblems([f"{flags}: for --executor slurm or submitit-local only"])
    if executor != "local" and jobs is not None:
        raise UsageProblems(["--jobs: for --executor local only (slurm: --max-parallel)"])
    spec = read_grid(grid)
    try:
        settings = SlurmSettings(**{**spec.slurm.model_dump(), **given})
    except ValidationError as error:
        lines = problem_lines(error)
        raise UsageProblems([f"--{line.replace('_', '-', 1)}" for line in lines]) from None
    if executor != "local":
        from posgen.train.sweep import require_submitit

        require_submitit(executor)
    require_extra()
    from posgen.encodings import available

    runs = expand(
        spec,
        resolve_encoding,
        lambda: list(available()),
        lambda: [name for name, pe in available().items() if pe.source == "built-in"],
    )
    _check_runs(runs, grid, executor, settings, force)
    sweep = Sweep(out)
    sweep.add(runs)
    for line in sweep.set_aside(runs):
        click.echo(f"note: {line}", err=True)
    sweep.tidy(runs)
    todo = sweep.unfinished(runs)
    counts = f"{counted(len(runs), 'run')} in {counted(len(jobs_of(runs)), 'training')}; "
    counts += f"{len(todo)} to train"
    click.echo(f"{out}: {counts}", err=True)
    if executor == "local":
        _run_local(sweep, todo, jobs)
    else:
        _run_submitit(sweep, todo, settings, executor, wait)


def resolve_encoding(request: Any, spec: Any, train: TrainConfig) -> Any:
    """The trainer's resolution of a grid's encoding (a ``PEError`` is a ``ValueError``)."""
    from posgen.train.trainer import resolve_pe

    return resolve_pe(request, train, spec)


def _check_runs(
    runs: list[RunSpec], grid: Path, executor: str, settings: SlurmSettings, force: bool
) -> None:
    """Refuse what every worker would fail on: ``bf16`` with no CUDA device (local executors),
    and unless ``--force`` a run that does not fit in memory (slurm: ``--mem-gb``)."""
    problems = []
    if executor != "slurm" and any(run.train.get("bf16") for run in runs):
        import torch

        if not torch.cuda.is_available():
            line = f"{grid}: bf16 = true needs a CUDA device and there is none here (CPU runs "
            problems.append(line + "compute in float32); drop it or use --executor slurm")
    available = settings.mem_gb * 2**30 if executor == "slurm" else available_bytes()
    datasets: dict[str, Dataset] = {}
    refused = set()
    for run in [] if force else runs:
        request = run.pe_request
        positions = request.randomized if isinstance(request.randomized, int) else None
        if run.data not in datasets:
            datasets[run.data] = Dataset.open(Path(run.data))
        dataset = datasets[run.data]
        train = preset(run.preset, **run.train)
        estimate = memory_estimate(
            dataset, run.config, train, positions, request.name not in NO_TABLE
        )
        fix = "lower batch_size, eval_batch_size or the model size in the grid's preset"
        where = f"{run.dataset}/{run.config} ({run.preset})"  # one line for all its runs
        if where not in refused and (problem := refusal(estimate, available, fix)):
            refused.add(where)
            problems.append(f"{where}: {problem}")
    if problems:
        raise UsageProblems(problems)


def _run_local(sweep: Sweep, todo: list[Any], jobs: int | None) -> None:
    from posgen.train.sweep import run_local, visible_gpus

    gpus = visible_gpus()
    workers = jobs or max(len(gpus), 1)
    outcome = run_local(sweep, todo, workers, gpus, lambda line: click.echo(line, err=True))
    if todo:
        with sweep.updating() as record:
            record.wall_seconds += outcome.seconds
    if outcome.signal is not None:
        raise interrupted(outcome.signal, stopped_line(outcome))
    if outcome.failed or outcome.interrupted:
        parts = [f"{len(outcome.failed)} failed"] * bool(outcome.failed)
        parts += [f"{len(outcome.interrupted)} stopped by a signal"] * bool(outcome.interrupted)
        raise RunError(
            f"of {counted(len(todo), 'training')}, {' and '.join(parts)}; see posgen sweep "
            f"--status {sweep.root}; rerun to retry and resume them"
        )


def stopped_line(outcome: Any) -> str:
    """What a signal left of a local sweep's trainings: how many resume, how many start over.

    >>> from posgen.train.sweep import Outcome
    >>> stopped_line(Outcome(interrupted=["a", "b"], resumable=["a"])).split(";")[0]
    '2 trainings stopped (1 with a checkpoint, 1 before its first)'
    """
    stopped, resumable = len(outcome.interrupted), len(outcome.resumable)
    if resumable == stopped:
        which, then = "", "resume them from their checkpoints"
    elif resumable == 0:
        which, then = " before their first checkpoint", "start them over"
    else:
        which = f" ({resumable} with a checkpoint, {stopped - resumable} before its first)"
        then = "resume or start them over"
    return f"{counted(stopped, 'training')} stopped{which}; rerun the same command to {then}"


def _run_submitit(
    sweep: Sweep, todo: list[Any], settings: SlurmSettings, executor: str, wait: bool
) -> None:
    """Submit ``todo``; with ``wait`` (always for submitit-local) say how each training ended.
    A signal stops only the waiting."""
    from posgen.train.sweep import submit

    cluster = "local" if executor == "submitit-local" else "slurm"
    watch = f"watch with: posgen sweep --status {sweep.root}"
    try:
        submitted = submit(sweep, todo, settings, cluster=cluster)
    except (RuntimeError, OSError) as error:  # no sbatch here, sbatch refused the job
        raise RunError(f"submitting to Slurm failed: {shown(error, 600)}") from None
    except Interrupted as stop:
        stop.left = f"stopped while submitting: trainings already submitted go on; {watch}"
        raise
    if not submitted:
        return
    ids = list(dict.fromkeys(str(job.job_id).split("_")[0] for job in submitted))  # arrays
    jobs = f"job {ids[0]}" if len(ids) == 1 else f"jobs {shown(', '.join(ids), 200)}"
    trainings = counted(len(submitted), "training")
    click.echo(f"submitted {trainings} as {jobs} (logs: {sweep.logs / 'slurm'}); {watch}", err=True)
    if not (wait or cluster == "local"):
        return
    failed = 0
    try:
        for job, element in zip(todo, submitted, strict=True):
            try:
                element.result()
                click.echo(f"{label(job.runs)}: done", err=True)
            except Exception as error:
                failed += 1
                reason = " ".join(str(error).split())[-300:]
                click.echo(f"{label(job.runs)}: failed: {reason}", err=True)
    except Interrupted as stop:
        where = "submitit's local processes" if cluster == "local" else "the Slurm array"
        was, goes, folders = (
            ("was", "it goes", "writes its run folder")
            if len(submitted) == 1
            else ("were", "they go", "write their run folders")
        )
        stop.left = (
            f"the {counted(len(submitted), 'submitted training')} {was} not stopped: {goes} on in "
            f"{where} and {folders} when done; {watch}"
        )
        raise
    if failed:
        raise RunError(
            f"of {counted(len(todo), 'training')}, {failed} failed; see posgen sweep --status "
            f"{sweep.root}"
        )


def _print_status(sweep: Sweep, as_json: bool) -> None:
    states = run_states(sweep)
    for entry in states:
        run = entry.run
        if as_json:
            fields = ("dataset", "config", "pe", "preset", "seed")
            item = {"run": run.key, "state": entry.state, "detail": entry.detail}
            click.echo(json.dumps({**item, **run.model_dump(include=set(fields))}, sort_keys=True))
        else:
            detail = f": {entry.detail}" if entry.detail else ""
            click.echo(f"{entry.state:<8} {label([run])}{detail}")
    if not as_json:
        counts = Counter(entry.state for entry in states)
        summary = ", ".join(f"{counts[s]} {s}" for s in ("done", "running", "failed", "waiting"))
        click.echo(f"{counted(len(states), 'run')}: {summary}")
