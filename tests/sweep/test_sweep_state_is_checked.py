"""Issue 27, class 9: a sweep folder's state is checked, never trusted.

A run is done only when its folder holds the whole run, checked (every run file, a
``results.json`` read whole) and its own (the data, encoding, settings and seed of the run
its hash names): a deleted file, a damaged record or a copied folder is not done; a rerun of
the sweep moves it to ``SWEEP/discarded/`` (with a ``note:`` line) and trains it again, to
the same bytes. ``sweep.json``'s keys are checked as hashes (they name folders: never
``../../elsewhere``) and no run is listed twice: a damaged record is one ``error:`` line
(exit 2) and nothing under the test's folder changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from posgen import signals, write_dataset  # noqa: E402
from posgen.cli.sweep import resolve_encoding  # noqa: E402
from posgen.spec import default_benchmark  # noqa: E402
from posgen.train.config import Grid, expand, jobs_of  # noqa: E402
from posgen.train.sweep import Sweep, run_job, run_states  # noqa: E402

TINY = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32, "batch_size": 32}
TIMING = ("seconds", "train_seconds", "wall_seconds")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    signals._passes.clear()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("checked-sweep") / "tiny"
    write_dataset(default_benchmark(("recursive",), train_size=96, val_size=16, test_size=8), root)
    return root


def grid_dict(data: Path) -> dict:
    overrides = {**TINY, "epochs": 2}
    preset = [{"name": "cpu", "overrides": overrides}]
    return {"datasets": [str(data)], "pes": ["rope", "yarn"], "seeds": [3], "presets": preset}


def runs_of(data: Path) -> list:
    return expand(Grid.model_validate(grid_dict(data)), resolve_encoding)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """A finished sweep: rope and yarn of seed 3, one training (never changed: copied)."""
    torch.set_num_threads(1)
    sweep = Sweep(tmp_path_factory.mktemp("reference") / "S")
    sweep.add(runs_of(data))
    (job,) = jobs_of(sweep.read().runs)
    run_job(sweep.root, job.key)
    return sweep.root


@pytest.fixture
def sweep(reference, tmp_path) -> Sweep:
    shutil.copytree(reference, tmp_path / "S", symlinks=True)
    return Sweep(tmp_path / "S")


def run_bytes(folder: Path) -> dict[str, object]:
    """A run folder's files, timings left out."""
    files: dict[str, object] = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    lines = [json.loads(line) for line in files.pop("metrics.jsonl").decode().splitlines()]
    files["metrics"] = [{k: v for k, v in line.items() if k not in TIMING} for line in lines]
    record = json.loads(files.pop("results.json"))
    files["results"] = {k: v for k, v in record.items() if k not in TIMING}
    return files


def by_pe(sweep: Sweep) -> dict:
    return {run.pe: run for run in sweep.read().runs}


# --- run folders: done only when whole and its own ---------------------------------------


def _delete(name: str):
    return lambda folder, other: (folder / name).unlink()


def _edit(change):
    def damage(folder: Path, other: Path) -> None:
        body = json.loads((folder / "results.json").read_text())
        change(body)
        (folder / "results.json").write_text(json.dumps(body))

    return damage


def _replace(make):
    def damage(folder: Path, other: Path) -> None:
        shutil.rmtree(folder)
        make(folder, other)

    return damage


def _truncate(folder: Path, other: Path) -> None:
    path = folder / "results.json"
    path.write_bytes(path.read_bytes()[:100])


# case -> (damage of rope's folder given it and yarn's, what the reason names)
DAMAGES = {
    "predictions.parquet deleted": (_delete("predictions.parquet"), "lacks predictions.parquet"),
    "probe_predictions.parquet deleted": (
        _delete("probe_predictions.parquet"),
        "lacks probe_predictions.parquet",
    ),
    "metrics.jsonl deleted": (_delete("metrics.jsonl"), "lacks metrics.jsonl"),
    "results.json deleted": (_delete("results.json"), "lacks results.json"),
    "results.json truncated": (_truncate, "not valid JSON"),
    "results.json's test scores edited": (
        _edit(lambda body: body["scores"]["id"].update(accuracy=0.999)),
        "scores.id.accuracy",
    ),
    "yarn's folder copied over rope's": (
        _replace(lambda folder, other: shutil.copytree(other, folder)),
        "holds another run (encoding yarn, not rope)",
    ),
    "a record of another seed": (_edit(lambda body: body.update(seed=4)), "seed 4, not 3"),
    "a record of another dataset folder": (
        _edit(lambda body: body["data"].update(folder="/elsewhere/other")),
        "dataset other, not tiny",
    ),
    "a record of other settings": (
        _edit(lambda body: body["train"].update(lr=0.001)),
        "other training settings",
    ),
    "the folder emptied": (_replace(lambda folder, other: folder.mkdir()), "lacks"),
    "the folder a file": (_replace(lambda folder, other: folder.write_text("x")), "a file"),
    "the folder a link to a whole copy of itself": (
        _replace(lambda folder, other: folder.symlink_to(folder.parents[2] / "rope-copy")),
        "a link",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGES))
def test_a_run_folder_that_is_not_whole_and_its_own_is_not_done_and_is_trained_again(
    recorded, sweep, reference, case
):
    damage, reason = DAMAGES[case]
    runs = by_pe(sweep)
    rope, yarn = (sweep.run_folder(runs[pe]) for pe in ("rope", "yarn"))
    shutil.copytree(rope, sweep.root.parent / "rope-copy")  # for the link case
    before = run_bytes(reference / runs["rope"].folder)
    damage(rope, yarn)
    states = {state.run.pe: state for state in run_states(sweep)}
    recorded_runs = list(runs.values())
    with recorded("damage", f"class 9: {case}"):
        assert states["rope"].state == "waiting", states["rope"]
        assert reason in states["rope"].detail
        assert states["yarn"].state == "done"
        assert [job.key for job in sweep.unfinished(recorded_runs)] == [runs["rope"].job]
        (line,) = sweep.set_aside(recorded_runs)
        assert reason in line and "discarded" in line
        assert os.path.lexists(sweep.root / "discarded" / f"{runs['rope'].key}.1")
        run_job(sweep.root, runs["rope"].job)
        assert run_bytes(rope) == before
        assert {state.state for state in run_states(sweep)} == {"done"}


def test_a_sweep_rerun_restores_a_run_whose_predictions_were_deleted(
    cli, recorded, sweep, reference, data, tmp_path
):
    rope = sweep.run_folder(by_pe(sweep)["rope"])
    (rope / "predictions.parquet").unlink()
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(grid_dict(data)))
    status = cli("sweep", "--status", sweep.root)
    result = cli("sweep", grid, "--out", sweep.root)
    with recorded("damage", "class 9: posgen sweep reruns a run whose predictions were deleted"):
        assert "2 runs: 1 done, 0 running, 0 failed, 1 waiting" in status.stdout, status.output
        assert result.exit_code == 0, result.output
        assert "note: " in result.stderr and "lacks predictions.parquet" in result.stderr
        assert "1 to train" in result.stderr
        assert run_bytes(rope) == run_bytes(reference / rope.relative_to(sweep.root))


# --- sweep.json: keys are hashes, every run once -------------------------------------------


def snapshot(folder: Path) -> dict[str, str]:
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[str(path)] = "folder or link"
    return found


def _run(index: int, **fields):
    def change(record: dict) -> None:
        record["runs"][index].update(fields)

    return change


def _repeat(times: int):
    def change(record: dict) -> None:
        record["runs"] = record["runs"] * times

    return change


def _one_twice(record: dict) -> None:
    record["runs"].append(dict(record["runs"][0]))


# case -> (the change of sweep.json, what the error line names)
RECORDS = {
    "a key of ../../elsewhere": (_run(0, key="../../elsewhere"), "runs.0.key"),
    "a key of ../runs/<other key>": (_run(0, key="../runs/0123456789abcdef"), "runs.0.key"),
    "a key of /tmp": (_run(0, key="/tmp"), "runs.0.key"),
    "a key in upper case": (_run(0, key="ABCDEF0123456789"), "runs.0.key"),
    "a key of 15 digits": (_run(0, key="0123456789abcde"), "runs.0.key"),
    "a key of 17 digits": (_run(0, key="0123456789abcdef0"), "runs.0.key"),
    "an empty key": (_run(0, key=""), "runs.0.key"),
    "a job of ../../elsewhere": (_run(1, job="../../elsewhere"), "runs.1.job"),
    "a job of .": (_run(0, job="."), "runs.0.job"),
    "the runs repeated 5,000 times": (_repeat(5000), "runs.2: run"),
    "one run listed twice": (_one_twice, "runs.2: run"),
    "two runs of one training with other seeds": (_run(1, seed=4), "runs.1: training"),
    "two runs of one training on other data": (_run(1, data="/elsewhere/tiny"), "runs.1: training"),
    "a seed of true": (_run(0, seed=True), "runs.0.seed"),
}


@pytest.mark.parametrize("case", sorted(RECORDS))
def test_a_damaged_sweep_json_is_one_error_line_and_nothing_changes(
    assert_clean_error, cli, recorded, sweep, data, tmp_path, case
):
    change, where = RECORDS[case]
    record = json.loads(sweep.record.read_text())
    change(record)
    sweep.record.write_text(json.dumps(record))
    (tmp_path / "elsewhere").mkdir()
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(grid_dict(data)))
    before = snapshot(tmp_path)
    status = cli("sweep", "--status", sweep.root)
    again = cli("sweep", grid, "--out", sweep.root)
    with recorded("path_escape", f"class 9: sweep.json: {case}"):
        for result in (status, again):
            assert_clean_error(result, 2, f"{sweep.record}: damaged", where)
        assert snapshot(tmp_path) == before


def test_a_recorded_run_edited_under_its_hash_is_refused(
    assert_clean_error, cli, recorded, sweep, data, tmp_path
):
    record = json.loads(sweep.record.read_text())
    for run in record["runs"]:
        run["seed"] = 4  # consistent, but not the run its hash names
    sweep.record.write_text(json.dumps(record))
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(grid_dict(data)))
    before = snapshot(tmp_path)
    result = cli("sweep", grid, "--out", sweep.root)
    with recorded("path_escape", "class 9: sweep.json: a run edited under its hash"):
        assert_clean_error(result, 2, "records other settings than the grid's run")
        assert snapshot(tmp_path) == before
