"""Hostile sweeps: grids refused before any run, damaged checkpoints, run folders and sweep.json."""

# ruff: noqa: E402
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from posgen.cli.sweep import resolve_encoding
from posgen.signals import Interrupted
from posgen.train.config import MAX_RUNS, GridError, expand, read_grid
from posgen.train.job import CHECKPOINT, DamagedCheckpoint
from posgen.train.sweep import run_job, run_states

TINY = "{ layers = 1, hidden = 16, heads = 2, intermediate = 32, batch_size = 32, epochs = 1 }"
DATA = "<the tiny dataset>"  # stands for the tiny dataset's path (as JSON) in a grid's text


def toml_grid(pes: str, seeds: str = "[3]") -> str:
    return (
        f'datasets = [{DATA}]\nconfigs = ["recursive"]\npes = {pes}\nseeds = {seeds}\n'
        f'[[presets]]\nname = "cpu"\noverrides = {TINY}\n'
    )


def written(path: Path, text: str, data: Path) -> Path:
    path.write_text(text.replace(DATA, json.dumps(str(data))))
    return path


def pe(name: str, parameters: str) -> str:
    return f'{{ name = "{name}", parameters = {{ {parameters} }} }}'


@pytest.fixture
def imported(monkeypatch) -> list[int]:
    """Appended to when the sweep gets as far as importing torch (it then stops)."""
    calls: list[int] = []

    def stop() -> None:
        calls.append(1)
        raise RuntimeError("the sweep got as far as importing torch")

    monkeypatch.setattr("posgen.cli.sweep.require_extra", stop)
    return calls


def bomb(datasets: int, configs: int, pes: str, seeds: int, presets: int) -> str:
    """A grid of a few KB that expands to ``datasets x configs x pes x seeds x presets`` runs."""
    lines = [
        "datasets = " + json.dumps([f"ds{n}" for n in range(datasets)]),
        "configs = " + json.dumps([f"c{n}" for n in range(configs)]) if configs else "",
        f"pes = {pes}",
        "seeds = " + json.dumps(list(range(seeds))),
    ]
    overrides = "".join(
        f'[[presets]]\nname = "cpu"\noverrides = {{ epochs = {n + 1} }}\n' for n in range(presets)
    )
    return "\n".join(lines) + "\n" + overrides


# --- refused when read: before torch is imported and the sweep folder made --------------------

LINEAR = ", ".join(pe("linear", f"factor = {n}") for n in range(1, 201))
BOMBS = {  # class 7: a small grid that expands without bound
    "the issue's 1,000 seeds x 60 presets x all x 2 configs": (1, 2, '"all"', 1000, 60),
    "1,000 seeds x 64 presets x 2 encodings": (1, 0, '["rope", "yarn"]', 1000, 64),
    "64 datasets x 256 configs x 2 encodings": (64, 256, '["rope", "yarn"]', 1, 1),
    "200 encodings x 101 seeds": (1, 0, f"[{LINEAR}]", 101, 1),
}
BAD_PARAMETERS = {  # classes 5 and 8: a TOML encoding table, a fragment of the error line
    "llama3 low_freq_factor 0": (pe("llama3", "low_freq_factor = 0"), ""),
    "linear factor 0": (pe("linear", "factor = 0"), "at least"),
    "linear factor nan": (pe("linear", "factor = nan"), "finite"),
    "linear factor inf": (pe("linear", "factor = inf"), "finite"),
    "linear factor true": (pe("linear", "factor = true"), "true or"),
    "linear factor abc": (pe("linear", 'factor = "abc"'), "number"),
    "linear factor [1, 2]": (pe("linear", "factor = [1, 2]"), "number"),
    "yarn factor 0.5": (pe("yarn", "factor = 0.5"), "at least 1"),
    "yarn beta_fast -1": (pe("yarn", "beta_fast = -1"), "greater"),
    "rope rope_theta 0": (pe("rope", "rope_theta = 0"), "greater"),
    "proportional partial_rotary_factor 2": (pe("proportional", "partial_rotary_factor = 2"),
                                             "at most 1"),
    "--pe :NAME": ('":NAME"', "package.module:NAME"),
    "--pe ../dir/mod:NAME": ('"../dir/mod:NAME"', "not a file path"),
}  # fmt: skip
REPEATED = {  # class 4: an encoding gives one parameter twice (TOML refuses it itself)
    "g.json": f'{{"datasets": [{DATA}], "pes": [{{"name": "linear", '
    '"parameters": {"factor": 2, "factor": 3}}]}',
    "g.yaml": f"datasets: [{DATA}]\npes:\n  - name: linear\n"
              "    parameters: {factor: 2, factor: 3}\n",
    "g.toml": f"datasets = [{DATA}]\npes = [{pe('linear', 'factor = 2, factor = 3')}]\n",
}  # fmt: skip
WHEN_READ = {  # case -> (what the summary counts it as, the grid file, its text, fragments)
    **{f"issue 27 class 7: {case}": ("bomb", "g.toml", bomb(*sizes),
                                     [f"more than the limit of {MAX_RUNS:,}"])
       for case, sizes in BOMBS.items()},
    **{f"issue 27 class 8: grid {case}": ("bad_input", "g.toml", toml_grid(f'["rope", {table}]'),
                                          ["pes: 1", fragment])
       for case, (table, fragment) in BAD_PARAMETERS.items()},
    **{f"issue 27 class 4: factor given twice in {name}": ("bad_input", name, text, ["factor"])
       for name, text in REPEATED.items()},
}  # fmt: skip


def _in_the_way(folder: Path, part: str, link: bool) -> None:
    folder.mkdir()
    (folder / "sweep.json").write_text("{}")
    (folder / part).symlink_to(folder.parent) if link else (folder / part).write_text("mine")


BEFORE_TRAINING = {  # what every worker would fail on -> (make the case, fragments)
    "a run that does not fit in memory": (
        lambda mp, sweep: mp.setattr("posgen.cli.sweep.available_bytes", lambda: 2**20),
        ["recursive (cpu)", "1.0 MiB is available", "grid's preset", "--force"]),
    "bf16 with no CUDA device": (
        lambda mp, sweep: mp.setattr(torch.cuda, "is_available", lambda: False),
        ["bf16 = true needs a CUDA device"]),
    "runs of the sweep folder a file": (
        lambda mp, sweep: _in_the_way(sweep, "runs", link=False), ["runs is a file"]),
    "logs of the sweep folder a link": (
        lambda mp, sweep: _in_the_way(sweep, "logs", link=True), ["logs is a link"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BEFORE_TRAINING))
def test_what_every_worker_would_fail_on_is_refused_before_any_training(
    assert_clean_error, cli, recorded, tiny_training_dataset, tmp_path, monkeypatch, case
):
    make, fragments = BEFORE_TRAINING[case]
    text = toml_grid('["rope"]')
    text = text.replace("epochs = 1", "epochs = 1, bf16 = true") if "bf16" in case else text
    grid = written(tmp_path / "g.toml", text, tiny_training_dataset)
    sweep = tmp_path / "S"
    make(monkeypatch, sweep)
    before = sorted(p.name for p in sweep.iterdir()) if sweep.exists() else None
    monkeypatch.setattr("posgen.cli.sweep._run_local", lambda *a: pytest.fail("it trained"))
    result = cli("sweep", grid, "--out", sweep)
    with recorded("bad_input", f"sweep: {case}"):
        assert_clean_error(result, 2, *fragments)
        assert (sorted(p.name for p in sweep.iterdir()) if sweep.exists() else None) == before


@pytest.mark.parametrize("case", sorted(WHEN_READ))
def test_a_grid_that_cannot_be_run_is_refused_when_read(
    assert_clean_error, cli, recorded, imported, tiny_training_dataset, tmp_path, case
):
    kind, name, text, fragments = WHEN_READ[case]
    grid = written(tmp_path / name, text, tiny_training_dataset)
    result = cli("sweep", grid, "--out", tmp_path / "S")
    with recorded(kind, case):
        assert_clean_error(result, 2, str(grid), *fragments)
        assert imported == []
        assert not (tmp_path / "S").exists()


def test_all_encodings_are_counted_before_expansion(recorded, tiny_training_dataset, tmp_path):
    seeds = json.dumps(list(range(700)))
    grid = read_grid(written(tmp_path / "g.toml", toml_grid('"all"', seeds), tiny_training_dataset))
    calls: list[int] = []  # 700 runs as read: "all" is counted once it is listed

    def counted(*args):
        calls.append(1)
        return resolve_encoding(*args)

    every = [f"pe{n}" for n in range(30)]
    with recorded("bomb", "issue 27 class 7: all encodings x 700 seeds"):
        with pytest.raises(GridError, match="21,000 runs"):
            expand(grid, counted, lambda: every)
        assert calls == []


AFTER_IMPORT = {  # refused when the grid is expanded: after the import, before any run
    "llama3 high_freq_factor = low_freq_factor": (
        pe("llama3", "low_freq_factor = 2, high_freq_factor = 2"),
        "high_freq_factor must be greater"),
    "rope randomized = 2**63 (a worker's OverflowError)": (
        f'{{ name = "rope", randomized = {2**63} }}', "position ids are 64-bit"),
    "plugin returning None frequencies": ('"h27plugins:NONE"', "h27_none"),
    "plugin with a bias of rank 2": ('"h27plugins:RANK"', "h27plugins:RANK"),
    "plugin raising on import": ('"h27raises:X"', "boom"),
    "plugin calling sys.exit(3) on import": ('"h27exits:X"', "SystemExit: 3"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(AFTER_IMPORT))
def test_a_grid_with_a_broken_encoding_is_refused_before_any_run(
    assert_clean_error, cli, recorded, tiny_training_dataset, tmp_path, hostile_plugins, case
):
    table, fragment = AFTER_IMPORT[case]
    grid = written(tmp_path / "g.toml", toml_grid(f'["rope", {table}]'), tiny_training_dataset)
    result = cli("sweep", grid, "--out", tmp_path / "S")
    with recorded("hostile", f"issue 27 class 8: grid {case}"):
        assert_clean_error(result, 2, "pes.1", fragment)
        assert not (tmp_path / "S").exists()


# --- class 10: what a stopped sweep says ----------------------------------------------------------


@pytest.mark.parametrize("executor", ["submitit-local", "slurm"])
def test_a_signal_while_waiting_on_submitit_says_the_trainings_go_on(
    assert_clean_error, cli, recorded, tiny_training_dataset, tmp_path, monkeypatch, executor
):
    class Stopping:
        job_id = "42_0"

        def result(self):
            raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr("posgen.train.sweep.submit", lambda *args, **kwargs: [Stopping()])
    monkeypatch.setattr("posgen.cli.sweep.require_extra", lambda: None)
    grid = written(tmp_path / "g.toml", toml_grid('["rope"]'), tiny_training_dataset)
    args = ["sweep", grid, "--out", tmp_path / "S", "--executor", executor, "--wait"]
    result = cli(*(args if executor == "slurm" else args[:-1]))
    with recorded("kill", f"issue 27 class 10: SIGTERM waiting on {executor}"):
        said = "the 1 submitted training was not stopped: it goes on in"
        line = assert_clean_error(result, 143, said, "its run folder when done; watch with")
        assert "no partial output" not in line


# --- class 6 in a sweep: a damaged checkpoint is never resumed ------------------------------------

CHECKPOINTS = {"empty": b"", "garbage without a checksum": b"PK\x03\x04 not a checkpoint" * 50}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_a_sweep_names_a_damaged_checkpoint_and_never_resumes_it(
    recorded, new_sweep, tmp_path, case
):
    sweep, job = new_sweep(tmp_path / "S", ["rope"])
    work = sweep.work(job)
    work.mkdir(parents=True)
    (work / CHECKPOINT).write_bytes(CHECKPOINTS[case])
    (work / "progress.json").write_text('{"epoch": 1, "step": 1, "done": false}\n')
    with recorded("damage", f"issue 27 class 6: sweep checkpoint {case}"):
        with pytest.raises(DamagedCheckpoint, match="rm -r"):
            run_job(sweep.root, job)
        (state,) = run_states(sweep)
        assert state.state == "failed"
        assert str(work / CHECKPOINT) in state.detail and "not resumed" in state.detail
        assert (work / CHECKPOINT).read_bytes() == CHECKPOINTS[case]
        assert not sweep.run_folder(state.run).exists()


# --- class 9: a run folder is done only when whole and its own; sweep.json is checked ------------


def _delete(name: str):
    return lambda folder, other: (folder / name).unlink()


def _edit(*keys: str, **fields):

    def damage(folder: Path, other: Path) -> None:
        body = json.loads((folder / "results.json").read_text())
        target = body
        for key in keys:
            target = target[key]
        target.update(fields)
        (folder / "results.json").write_text(json.dumps(body))

    return damage


def _replace(make):
    return lambda folder, other: (shutil.rmtree(folder), make(folder, other))


def _truncate(folder: Path, other: Path) -> None:
    (folder / "results.json").write_bytes((folder / "results.json").read_bytes()[:100])


DAMAGES = {  # case -> (damage of rope's folder given it and yarn's, what the reason names)
    **{f"{name} deleted": (_delete(name), f"lacks {name}") for name in
       ("predictions.parquet", "probe_predictions.parquet", "metrics.jsonl", "results.json")},
    "results.json truncated": (_truncate, "not valid JSON"),
    "its test scores edited": (_edit("scores", "id", accuracy=0.999), "scores.id.accuracy"),
    "yarn's folder copied over rope's": (_replace(lambda f, other: shutil.copytree(other, f)),
                                         "holds another run (encoding yarn, not rope)"),
    "a record of another seed": (_edit(seed=4), "seed 4, not 3"),
    "a record of another dataset": (_edit("data", folder="/elsewhere/other"),
                                    "dataset other, not ds"),
    "a record of other settings": (_edit("train", lr=0.001), "other training settings"),
    "the folder emptied": (_replace(lambda f, other: f.mkdir()), "lacks"),
    "the folder a file": (_replace(lambda f, other: f.write_text("x")), "a file"),
    "the folder a link to a whole copy of itself": (
        _replace(lambda f, other: f.symlink_to(f.parents[2] / "rope-copy")), "a link"),
}  # fmt: skip


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
        (sweep.root / "discarded" / f"{runs['rope'].key}.1").mkdir(parents=True)  # set aside before
        (line,) = sweep.set_aside(recorded_runs)
        assert reason in line and "discarded" in line
        assert os.path.lexists(sweep.root / "discarded" / f"{runs['rope'].key}.2")
        run_job(sweep.root, runs["rope"].job)
        assert run_bytes(rope) == before
        assert {state.state for state in run_states(sweep)} == {"done"}


def _run(index: int | None, **fields):

    def change(record: dict) -> None:
        for run in record["runs"] if index is None else [record["runs"][index]]:
            run.update(fields)

    return change


def _rekeyed(record: dict) -> None:
    """Well-formed, but the grid's runs (seed 3) would join these trainings (seed 4)."""
    for number, run in enumerate(record["runs"]):
        run.update(key=f"{number:016x}", seed=4)


BAD_KEYS = ["../../elsewhere", "../runs/0123456789abcdef", "/tmp", "ABCDEF0123456789"]
BAD_KEYS += ["0123456789abcde", "0123456789abcdef0", ""]  # 15 and 17 digits, none
RECORDS = {  # case -> (the change of sweep.json, what the error line names)
    **{f"a key of {key!r}": (_run(0, key=key), "damaged (runs.0.key") for key in BAD_KEYS},
    "a job of ../../elsewhere": (_run(1, job="../../elsewhere"), "damaged (runs.1.job"),
    "a job of .": (_run(0, job="."), "damaged (runs.0.job"),
    "the runs repeated 5,000 times": (lambda record: record.update(runs=record["runs"] * 5000),
                                      "damaged (runs.2: run"),
    "one run listed twice": (lambda record: record["runs"].append(dict(record["runs"][0])),
                             "damaged (runs.2: run"),
    "two runs of one training with other seeds": (_run(1, seed=4), "damaged (runs.1: training"),
    "two runs of one training on other data": (_run(1, data="/elsewhere/ds"),
                                               "damaged (runs.1: training"),
    "a seed of true": (_run(0, seed=True), "damaged (runs.0.seed"),
    "the runs given other hashes and seeds (the grid's runs would join their training)": (
        _rekeyed, "not updated: the change would leave it inconsistent (runs.2: training"),
    "every run's seed edited (consistent, but not the runs their hashes name)": (
        _run(None, seed=4), "records other settings than the grid's run"),
    "the runs of another plugin of the grid's label (was called an edited file)": (
        _run(None, job="0123456789abcdef", pe_request={"name": "othermod:ROPE"}),
        "its encoding 'rope' is othermod:ROPE, the grid's is rope: give one plugin"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(RECORDS))
def test_a_damaged_or_edited_sweep_json_is_one_error_line_and_nothing_changes(
    assert_clean_error, cli, recorded, sweep_copy, sweep_grid, tree, tmp_path, case
):
    change, fragment = RECORDS[case]
    record = json.loads(sweep_copy.record.read_text())
    change(record)
    sweep_copy.record.write_text(json.dumps(record))
    (tmp_path / "elsewhere").mkdir()
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(sweep_grid(["rope", "yarn"])))
    before = tree(tmp_path)
    status = cli("sweep", "--status", sweep_copy.root)
    again = cli("sweep", grid, "--out", sweep_copy.root)
    with recorded("path_escape", f"class 9: sweep.json: {case}"):
        assert_clean_error(again, 2, str(sweep_copy.record), fragment)
        if "damaged" in fragment:  # an edited record reads as well-formed
            assert_clean_error(status, 2, str(sweep_copy.record), fragment)
        assert tree(tmp_path) == before


def test_a_pipe_in_a_failure_records_place_is_named_never_waited_on(tmp_path):
    from posgen.train.sweep import Sweep

    sweep = Sweep(tmp_path)
    sweep.failure("job").parent.mkdir()
    os.mkfifo(sweep.failure("job"))
    assert sweep.failure_reason("job") == (
        "(failure record unreadable: a pipe or a device, not a regular file)"
    )
