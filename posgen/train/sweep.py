"""The ``make results`` sweep: every (data folder, task, pe, seed) run, in parallel processes.

Each job trains once for the position encodings that share their training (equal
:meth:`~posgen.train.registry.ResolvedPE.training_key`: ``rope``, ``yarn``, ``linear``,
``llama3``; ``resonance`` and its evaluation-time variants; see
:func:`posgen.train.trainer.train_runs`), so the sweep trains fewer models than it writes
run folders. Jobs run as ``--jobs`` processes with one torch thread each. A run
folder that exists is finished (folders appear atomically) and is skipped, so a rerun
after an interruption trains only what is missing, and a rerun after completion only
re-aggregates.

Layout: ``RUNS/<data folder name>/<task>/<pe>/seed<seed>``.

    python -m posgen.train.sweep --data out/posgen-v1 --data out/paper --runs runs --preset cpu
    python -m posgen.train.sweep --data out/paper --runs runs --pe nope --pe alibi
    python -m posgen.train.sweep --data out/paper --runs runs --all-pes
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import click

from posgen.scoring.reference import config_names
from posgen.store.atomic import write_atomically
from posgen.train.config import PES, PRESETS, TrainConfig, preset


@dataclass(frozen=True)
class Job:
    """One training: a data folder's task, a seed, the pes it serves and their run folders."""

    data: Path
    task: str
    seed: int
    pes: tuple[str, ...]
    outs: tuple[Path, ...]


def run_folder(runs: Path, data: Path, task: str, pe: str, seed: int) -> Path:
    """Where a run goes.

    >>> run_folder(Path("runs"), Path("out/paper"), "cot", "yarn", 42).as_posix()
    'runs/paper/cot/yarn/seed42'
    """
    return runs / data.name / task / pe / f"seed{seed}"


def shared_trainings(
    pes: tuple[str, ...], data: Path, task: str, config: TrainConfig
) -> list[tuple[str, ...]]:
    """``pes`` grouped by their training (first appearance order): one training per group."""
    from posgen.scoring.reference import load_reference
    from posgen.train.encoding import Lengths, PERequest
    from posgen.train.registry import resolve

    spec = load_reference(data, task, "validation").spec
    lengths = Lengths(
        train=spec.train_length,
        test=spec.test_lengths[0],
        head_dim=config.hidden // config.heads,
        heads=config.heads,
    )
    groups: dict[str, list[str]] = {}
    for pe in pes:
        groups.setdefault(resolve(PERequest(name=pe), lengths).training_key(), []).append(pe)
    return [tuple(group) for group in groups.values()]


def plan(
    data_dirs: list[Path],
    runs: Path,
    seeds: list[int],
    pes: tuple[str, ...],
    config: TrainConfig | None = None,
) -> list[Job]:
    """Jobs for the run folders still missing (finished ones are skipped)."""
    config = config or preset("cpu")
    jobs = []
    for seed in seeds:  # seed outermost: an interrupted sweep has whole tables for fewer seeds
        for data in data_dirs:
            for task in config_names(data):
                for pair in shared_trainings(pes, data, task, config):
                    todo = [
                        pe
                        for pe in pair
                        if pe in pes and not run_folder(runs, data, task, pe, seed).exists()
                    ]
                    if todo:
                        outs = tuple(run_folder(runs, data, task, pe, seed) for pe in todo)
                        jobs.append(Job(data, task, seed, tuple(todo), outs))
    return jobs


def _run(job: Job, preset_name: str, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    import torch

    from posgen.train.trainer import train_runs

    torch.set_num_threads(1)
    config = preset(preset_name, **overrides)
    return train_runs(
        job.data, job.task, list(job.pes), config, job.seed, list(job.outs), preset_name
    )


@click.command()
@click.option("--data", "data_dirs", multiple=True, required=True, type=click.Path(path_type=Path))
@click.option("--runs", required=True, type=click.Path(path_type=Path), help="Runs folder.")
@click.option("--preset", "preset_name", default="cpu", type=click.Choice(list(PRESETS)))
@click.option("--seeds", type=int, help="Number of the preset's seeds to run. [all]")
@click.option("--pe", "pes", multiple=True, help="PEs to run (repeatable). [the paper's four]")
@click.option("--all-pes", is_flag=True, help="Run every registered PE (built in and plugins).")
@click.option("--jobs", default=2, type=click.IntRange(min=1), help="Parallel processes.")
@click.option("--epochs", type=int, help="Override the preset's epochs.")
def main(
    data_dirs: tuple[Path, ...],
    runs: Path,
    preset_name: str,
    seeds: int | None,
    pes: tuple[str, ...],
    all_pes: bool,
    jobs: int,
    epochs: int | None,
) -> None:
    """Train every missing run of the sweep; print one line per finished job."""
    overrides = {"epochs": epochs}
    config = preset(preset_name, **overrides)
    if all_pes:
        from posgen.train.registry import available

        pes = tuple(available())
    from posgen.train.registry import PEError

    try:
        todo = plan(list(data_dirs), runs, config.seeds[:seeds], pes or PES, config)
    except PEError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    click.echo(f"{len(todo)} trainings to run ({jobs} processes)", err=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_run, job, preset_name, overrides): job for job in todo}
        failed = []
        for done, future in enumerate(as_completed(futures), 1):
            job = futures[future]
            try:
                summaries = future.result()
            except Exception as error:  # one failed job must not stop the others
                failed.append(job)
                click.echo(f"error: {job.data.name}/{job.task}/seed{job.seed}: {error}", err=True)
                continue
            for summary in summaries:
                click.echo(
                    f"[{done}/{len(todo)} {time.perf_counter() - started:.0f}s] "
                    f"{job.data.name}/{job.task}/{summary['pe']}/seed{job.seed}: "
                    f"ID {summary['id_accuracy']:.3f} OOD {summary['ood_accuracy']:.3f} "
                    f"(epoch {summary['best_epoch']})",
                    err=True,
                )
    wall = time.perf_counter() - started
    record = runs / "sweep.json"
    previous = json.loads(record.read_text()) if record.exists() else {"wall_seconds": 0.0}
    if todo:
        previous["wall_seconds"] = previous["wall_seconds"] + wall
        write_atomically(record, (json.dumps(previous) + "\n").encode())
    click.echo(f"{previous['wall_seconds']:.0f}")
    if failed:
        click.echo(f"error: {len(failed)} of {len(todo)} trainings failed", err=True)
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
