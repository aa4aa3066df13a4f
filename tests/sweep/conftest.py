"""The tiny sweep the sweep tests share: a grid on ``tiny_training_dataset``'s recursive config
(a 1-layer model, 2 epochs of 2 steps), new sweep folders of it, a finished rope + yarn sweep
(one training, two run folders) and the bytes of run folders, timings left out."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

TINY = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32, "batch_size": 32}
TIMING = ("seconds", "train_seconds", "wall_seconds")
"""Wall-clock fields (metrics.jsonl, results.json): the only bytes that differ between runs."""


@pytest.fixture(autouse=True)
def _fresh_hook_counts():
    from posgen import signals

    signals._passes.clear()


@pytest.fixture(scope="session")
def sweep_grid(tiny_training_dataset) -> Callable[..., dict]:
    """``sweep_grid(["rope"], seeds=[4])``: a grid (a dict) of the tiny sweep, seed 3."""

    def grid(pes, **extra) -> dict:
        preset = {"name": "cpu", "overrides": {**TINY, "epochs": 2}}
        data = [str(tiny_training_dataset)]
        base = {"datasets": data, "configs": ["recursive"], "pes": pes, "seeds": [3]}
        return {**base, "presets": [preset], **extra}

    return grid


@pytest.fixture(scope="session")
def expand_grid() -> Callable[[dict], list]:
    """``expand_grid(grid)``: the runs of a grid dict, encodings resolved as the trainer does."""
    from posgen.cli.sweep import resolve_encoding
    from posgen.train.config import Grid, expand

    return lambda grid: expand(Grid.model_validate(grid), resolve_encoding)


@pytest.fixture(scope="session")
def new_sweep(sweep_grid, expand_grid) -> Callable[..., object]:
    """``new_sweep(root, ["rope", "yarn"])``: a sweep folder holding the grid's runs (none
    trained), and its one training's key."""
    from posgen.train.config import jobs_of
    from posgen.train.sweep import Sweep

    def make(root: Path, pes=("rope", "yarn")) -> tuple[Sweep, str]:
        sweep = Sweep(root)
        sweep.add(expand_grid(sweep_grid(list(pes))))
        (job,) = jobs_of(sweep.read().runs)
        return sweep, job.key

    return make


def run_bytes(folder: Path) -> dict[str, object]:
    """Every file of a run folder: bytes, but metrics.jsonl and results.json without timings."""
    files: dict[str, object] = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    lines = [json.loads(line) for line in files.pop("metrics.jsonl").decode().splitlines()]
    files["metrics"] = [{k: v for k, v in line.items() if k not in TIMING} for line in lines]
    record = json.loads(files.pop("results.json"))
    files["results"] = {k: v for k, v in record.items() if k not in TIMING}
    return files


@pytest.fixture(scope="session", name="run_bytes")
def _run_bytes() -> Callable[[Path], dict[str, object]]:
    """``run_bytes(folder)``: see the function of that name."""
    return run_bytes


@pytest.fixture(scope="session")
def sweep_bytes() -> Callable[[object], dict[str, dict[str, object]]]:
    """``sweep_bytes(sweep)``: :func:`run_bytes` of each recorded run, by run key."""
    return lambda sweep: {run.key: run_bytes(sweep.run_folder(run)) for run in sweep.read().runs}


@pytest.fixture(scope="session")
def finished_sweep(new_sweep, tmp_path_factory) -> Path:
    """An uninterrupted rope + yarn sweep (never changed: copy it)."""
    import torch

    from posgen.train.sweep import run_job

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sweep, job = new_sweep(tmp_path_factory.mktemp("finished") / "S")
    run_job(sweep.root, job)
    torch.set_num_threads(threads)
    return sweep.root


@pytest.fixture(scope="session")
def reference(finished_sweep, sweep_bytes) -> dict[str, dict[str, object]]:
    """:func:`run_bytes` of ``finished_sweep``'s two runs, by run key."""
    from posgen.train.sweep import Sweep

    return sweep_bytes(Sweep(finished_sweep))


@pytest.fixture
def sweep_copy(finished_sweep, tmp_path):
    """A fresh copy of ``finished_sweep`` for this test to damage."""
    from posgen.train.sweep import Sweep

    shutil.copytree(finished_sweep, tmp_path / "S", symlinks=True)
    return Sweep(tmp_path / "S")
