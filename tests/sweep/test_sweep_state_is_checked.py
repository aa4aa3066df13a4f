"""Issue 27, class 9: a run is done only when its folder is whole and its own (else a rerun
sets it aside and trains it again), and a damaged ``sweep.json`` is one error line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from posgen.train.sweep import run_job, run_states  # noqa: E402

# --- run folders: done only when whole and its own ---------------------------------------


def _delete(name: str):
    return lambda folder, other: (folder / name).unlink()


def _edit(*keys: str, **fields):
    """results.json's object at ``keys`` given ``fields``."""

    def damage(folder: Path, other: Path) -> None:
        body = json.loads((folder / "results.json").read_text())
        target = body
        for key in keys:
            target = target[key]
        target.update(fields)
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


DAMAGES = {  # case -> (damage of rope's folder given it and yarn's, what the reason names)
    "predictions.parquet deleted": (_delete("predictions.parquet"), "lacks predictions.parquet"),
    "probe_predictions.parquet deleted": (
        _delete("probe_predictions.parquet"),
        "lacks probe_predictions.parquet",
    ),
    "metrics.jsonl deleted": (_delete("metrics.jsonl"), "lacks metrics.jsonl"),
    "results.json deleted": (_delete("results.json"), "lacks results.json"),
    "results.json truncated": (_truncate, "not valid JSON"),
    "its test scores edited": (_edit("scores", "id", accuracy=0.999), "scores.id.accuracy"),
    "yarn's folder copied over rope's": (
        _replace(lambda folder, other: shutil.copytree(other, folder)),
        "holds another run (encoding yarn, not rope)",
    ),
    "a record of another seed": (_edit(seed=4), "seed 4, not 3"),
    "a record of another dataset": (
        _edit("data", folder="/elsewhere/other"),
        "dataset other, not ds",
    ),
    "a record of other settings": (_edit("train", lr=0.001), "other training settings"),
    "the folder emptied": (_replace(lambda folder, other: folder.mkdir()), "lacks"),
    "the folder a file": (_replace(lambda folder, other: folder.write_text("x")), "a file"),
    "the folder a link to a whole copy of itself": (
        _replace(lambda folder, other: folder.symlink_to(folder.parents[2] / "rope-copy")),
        "a link",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGES))
def test_a_run_folder_that_is_not_whole_and_its_own_is_not_done_and_is_trained_again(
    recorded, sweep_copy, finished_sweep, run_bytes, case
):
    damage, reason = DAMAGES[case]
    sweep = sweep_copy
    runs = {run.pe: run for run in sweep.read().runs}
    rope, yarn = (sweep.run_folder(runs[pe]) for pe in ("rope", "yarn"))
    shutil.copytree(rope, sweep.root.parent / "rope-copy")  # for the link case
    before = run_bytes(finished_sweep / runs["rope"].folder)
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


# --- sweep.json: keys are hashes, every run once -------------------------------------------


def snapshot(folder: Path) -> dict[str, str]:
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[str(path)] = "folder or link"
    return found


def _run(index: int | None, **fields):
    """Run ``index`` of sweep.json (every run: None) given ``fields``."""

    def change(record: dict) -> None:
        for run in record["runs"] if index is None else [record["runs"][index]]:
            run.update(fields)

    return change


BAD_KEYS = ["../../elsewhere", "../runs/0123456789abcdef", "/tmp", "ABCDEF0123456789"]
BAD_KEYS += ["0123456789abcde", "0123456789abcdef0", ""]  # 15 and 17 digits, none
RECORDS = {  # case -> (the change of sweep.json, what the error line names)
    **{f"a key of {key!r}": (_run(0, key=key), "damaged (runs.0.key") for key in BAD_KEYS},
    "a job of ../../elsewhere": (_run(1, job="../../elsewhere"), "damaged (runs.1.job"),
    "a job of .": (_run(0, job="."), "damaged (runs.0.job"),
    "the runs repeated 5,000 times": (
        lambda record: record.update(runs=record["runs"] * 5000),
        "damaged (runs.2: run",
    ),
    "one run listed twice": (
        lambda record: record["runs"].append(dict(record["runs"][0])),
        "damaged (runs.2: run",
    ),
    "two runs of one training with other seeds": (_run(1, seed=4), "damaged (runs.1: training"),
    "two runs of one training on other data": (
        _run(1, data="/elsewhere/ds"),
        "damaged (runs.1: training",
    ),
    "a seed of true": (_run(0, seed=True), "damaged (runs.0.seed"),
    "every run's seed edited (consistent, but not the runs their hashes name)": (
        _run(None, seed=4),
        "records other settings than the grid's run",
    ),
}


@pytest.mark.parametrize("case", sorted(RECORDS))
def test_a_damaged_or_edited_sweep_json_is_one_error_line_and_nothing_changes(
    assert_clean_error, cli, recorded, sweep_copy, sweep_grid, tmp_path, case
):
    change, fragment = RECORDS[case]
    record = json.loads(sweep_copy.record.read_text())
    change(record)
    sweep_copy.record.write_text(json.dumps(record))
    (tmp_path / "elsewhere").mkdir()
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(sweep_grid(["rope", "yarn"])))
    before = snapshot(tmp_path)
    status = cli("sweep", "--status", sweep_copy.root)
    again = cli("sweep", grid, "--out", sweep_copy.root)
    with recorded("path_escape", f"class 9: sweep.json: {case}"):
        assert_clean_error(again, 2, str(sweep_copy.record), fragment)
        if "damaged" in fragment:  # an edited record reads as well-formed
            assert_clean_error(status, 2, str(sweep_copy.record), fragment)
        assert snapshot(tmp_path) == before
