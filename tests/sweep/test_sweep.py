"""``posgen sweep``: grids, run hashes, executors, status, and runs killed at exact points."""

# ruff: noqa: E402
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from posgen import signals
from posgen.cli.sweep import resolve_encoding, stopped_line
from posgen.errors import RunError
from posgen.signals import Interrupted
from posgen.store.safety import exclusive
from posgen.train.config import Grid, expand, identity, jobs_of, preset, read_grid, stable_hash
from posgen.train.job import train_runs
from posgen.train.sweep import (
    Outcome,
    Sweep,
    _settle,
    _start,
    import_env,
    job_main,
    run_job,
    run_states,
    visible_gpus,
)

ROOT = Path(__file__).resolve().parents[2]
GRIDS = ROOT / "grids"


def write_grid(path: Path, grid: dict) -> Path:
    path.write_text(json.dumps(grid))
    return path


def states(sweep: Sweep) -> dict[str, tuple[str, str]]:
    return {s.run.pe: (s.state, s.detail) for s in run_states(sweep)}


# --- grids and hashes -------------------------------------------------------------------


def test_grid_expands_seed_outermost_and_groups_pes_that_train_alike(sweep_grid, expand_grid):
    linear = {"name": "linear", "parameters": {"factor": 2}}
    runs = expand_grid(sweep_grid(["rope", "yarn", "resonance", linear, "nope"], seeds=[5, 1]))
    labels = ["rope", "yarn", "resonance", "linear(factor=2)", "nope"]
    assert [(run.seed, run.pe) for run in runs] == [(s, pe) for s in (5, 1) for pe in labels]
    per_seed = [["rope", "yarn", "linear(factor=2)"], ["resonance"], ["nope"]]
    assert [[run.pe for run in job.runs] for job in jobs_of(runs)] == per_seed + per_seed
    unseeded = expand_grid(sweep_grid(["rope"], seeds=None))  # each preset's own seeds
    assert [run.seed for run in unseeded] == [5549, 4955, 42]
    both = expand_grid(
        sweep_grid(["rope"], seeds=None, presets=[{"name": "cpu"}, {"name": "paper"}])
    )
    assert [(run.seed, run.preset) for run in both] == [  # cpu: the first 3 of paper's 5
        *((seed, preset) for seed in (5549, 4955, 42) for preset in ("cpu", "paper")),
        (3701, "paper"), (49, "paper")]  # fmt: skip


def test_run_hash_is_stable_changes_with_every_field_and_not_with_where_the_data_lies(
    sweep_grid, expand_grid, tiny_training_dataset, tmp_path, monkeypatch
):
    moved = tmp_path / "elsewhere" / tiny_training_dataset.name
    shutil.copytree(tiny_training_dataset, moved)
    (tmp_path / "latest").symlink_to(tiny_training_dataset)
    monkeypatch.chdir(tiny_training_dataset)
    base = sweep_grid(["rope"])
    (direct,) = expand_grid(base)
    for given in (tiny_training_dataset, moved, tmp_path / "latest", "."):
        (run,) = expand_grid(sweep_grid(["rope"], datasets=[str(given)]))
        # a link or "." names the run as its record will: by the folder's own name
        assert (run.dataset, run.key) == (Path(run.data).name, direct.key)
    # sha256(b'{"pe":"rope","seed":1}'): a changed hash would retrain every finished run
    assert stable_hash({"seed": 1, "pe": "rope"}) == "c8d59a9e137f9512"
    overrides = base["presets"][0]["overrides"]
    linear = [{"name": "linear", "parameters": {"factor": f}} for f in (2, 3)]
    variants = [base, {**base, "seeds": [4]}, {**base, "pes": ["resonance"]},
                {**base, "pes": linear[:1]}, {**base, "pes": linear[1:]},
                {**base, "presets": [{"name": "cpu", "overrides": {**overrides, "epochs": 3}}]},
                {**base, "presets": [{"name": "paper", "overrides": overrides}]}]  # fmt: skip
    assert len({expand_grid(grid)[0].key for grid in variants}) == len(variants)


def test_a_grid_naming_the_data_where_it_lies_now_points_its_trainings_there(
    sweep_grid, expand_grid, tiny_training_dataset, tmp_path
):
    first = tmp_path / "a" / "ds"
    shutil.copytree(tiny_training_dataset, first)
    sweep = Sweep(tmp_path / "S")
    sweep.add(expand_grid(sweep_grid(["rope"], datasets=[str(first)])))  # then interrupted
    moved = tmp_path / "b" / "ds"
    os.renames(first, moved)
    runs = expand_grid(sweep_grid(["rope", "yarn"], datasets=[str(moved)]))  # one training
    sweep.add(runs)
    assert {run.data for run in sweep.read().runs} == {str(moved.resolve())}
    run_job(sweep.root, runs[0].job)
    assert sweep.done(runs)


def test_all_is_every_registered_pe_and_builtin_leaves_plugins_out(sweep_grid):
    from posgen.encodings import available

    every = Grid.model_validate(sweep_grid("all"))
    runs = expand(every, resolve_encoding, lambda: list(available()))
    assert [run.pe for run in runs] == list(available())
    builtin = Grid.model_validate(sweep_grid("builtin"))
    runs = expand(builtin, resolve_encoding, lambda: ["rope", "nope", "alibi"], lambda: ["rope"])
    assert [run.pe for run in runs] == ["rope"]


def test_one_training_for_rope_yarn_and_linear_writes_what_separate_runs_write(
    sweep_grid, tiny_training_dataset, run_bytes, tmp_path
):
    pes = ["rope", "yarn", "linear"]
    overrides = sweep_grid(pes)["presets"][0]["overrides"]  # the tiny model, 2 epochs
    # 64 rows in batches of 32: the third step is the second epoch's first
    config = preset("cpu", **overrides, max_steps=3)
    shared = [tmp_path / f"shared-{pe}" for pe in pes]
    train_runs(tiny_training_dataset, "recursive", pes, config, 7, shared, "cpu")
    for pe, together in zip(pes, shared, strict=True):
        alone = tmp_path / f"alone-{pe}"
        train_runs(tiny_training_dataset, "recursive", [pe], config, 7, [alone], "cpu")
        assert run_bytes(alone) == run_bytes(together)


def test_a_grid_naming_rope_twice_one_with_its_default_spelled_out_makes_one_run(
    recorded, tiny_training_dataset
):
    pes = ["rope", {"name": "rope", "parameters": {"rope_theta": 10000}}]
    body = {"datasets": [str(tiny_training_dataset)], "configs": ["cot"], "seeds": [1]}
    runs = expand(Grid.model_validate({**body, "pes": pes}), resolve_encoding)
    with recorded("bad_input", "class 11: a grid of rope and rope with rope_theta=10000"):
        assert [run.pe for run in runs] == ["rope"]


# --- the GPU path (several runs on one device, bf16) and the shipped grids -------------------


def test_several_workers_share_one_gpu(tmp_path, monkeypatch):
    seen = []

    class Popen:
        def __init__(self, command, **kwargs):
            seen.append(kwargs["env"].get("CUDA_VISIBLE_DEVICES"))

    monkeypatch.setattr(subprocess, "Popen", Popen)
    sweep = Sweep(tmp_path / "S")
    sweep.logs.mkdir(parents=True)
    job = type("Job", (), {"key": "k"})()
    for slot in range(3):
        _start(sweep, job, slot, ["0"])
    assert seen == ["0", "0", "0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")  # the GPUs the sweep was given, in turn
    for slot in range(3):
        _start(sweep, job, slot, visible_gpus())
    assert seen[3:] == ["2", "5", "2"]


def test_bf16_off_leaves_every_run_name_as_it_was():
    config = preset("cpu")
    named = identity("d", "s", "cot", "cpu", config, 1, pe="rope")
    assert "bf16" not in named["train"]
    assert stable_hash(named) == stable_hash(
        {**named, "train": config.model_dump(mode="json", exclude={"bf16"})}
    )
    on = identity("d", "s", "cot", "cpu", preset("cpu", bf16=True), 1, pe="rope")
    assert on["train"]["bf16"] is True and stable_hash(on) != stable_hash(named)


def test_the_grids_in_the_repo_and_the_readme_grid_are_valid_grids(tmp_path):
    from posgen.encodings import available

    paper = ["rope", "yarn", "resonance", "resonance_yarn"]
    assert [pe.name for pe in read_grid(GRIDS / "paper.toml").pes] == paper
    built_in = {name for name, pe in available().items() if pe.source == "built-in"}
    assert set(paper) < built_in  # results.toml's "builtin" has the paper's four too
    grid = read_grid(GRIDS / "results.toml")  # make results: posgen-v1, no posgen-v2, one seed
    assert [p.name for p in grid.datasets] == ["posgen-v1"]
    assert grid.pes == "builtin"
    assert grid.seeds == [5549]  # three seeds do not fit the 3-hour budget on 2 cores
    assert [(p.name, p.overrides) for p in grid.presets] == [("cpu", {})]
    paper = read_grid(GRIDS / "results-paper.toml")
    assert [p.name for p in paper.datasets] == ["paper"]
    assert {pe.name for pe in paper.pes} == {"rope", "yarn", "linear", "llama3"} | {
        f"resonance{suffix}" for suffix in ("", "_yarn", "_linear", "_llama3")
    }
    assert (paper.seeds, paper.presets) == (grid.seeds, grid.presets)
    assert preset("cpu").seeds == [5549, 4955, 42]
    every = read_grid(GRIDS / "results-all.toml")
    assert [p.name for p in every.datasets] == ["posgen-v1", "posgen-v2", "paper"]
    assert every.pes == "all"
    section = (ROOT / "README.md").read_text().split("### Sweeps", 1)[1]
    (tmp_path / "readme.toml").write_text(section.split("```toml\n", 1)[1].split("```", 1)[0])
    assert read_grid(tmp_path / "readme.toml").slurm.max_parallel == 20


def test_paper_gpu_grid_is_the_paper_preset_on_cot_rope_against_resonance_one_seed(
    tiny_training_dataset,
):
    grid = read_grid(GRIDS / "paper-gpu.toml")
    assert [p.name for p in grid.datasets] == ["paper"]
    assert grid.configs == ["cot"]
    assert [pe.name for pe in grid.pes] == ["rope", "resonance"]
    assert grid.seeds == [5549]
    (entry,) = grid.presets
    config = entry.resolved()
    paper = preset("paper")
    assert entry.name == "paper" and config.bf16 and config.epochs == 60 < paper.epochs
    assert config.model_dump(exclude={"epochs", "bf16"}) == paper.model_dump(
        exclude={"epochs", "bf16"}
    )
    here = grid.model_copy(update={"datasets": [tiny_training_dataset]})
    runs = expand(here, resolve_encoding)
    assert len(runs) == 2 and len(jobs_of(runs)) == 2  # two trainings side by side


# --- bad grid files, flags and missing extras: one error line, nothing written ------------------


def cpu(**overrides) -> dict:
    return {"presets": [{"name": "cpu", "overrides": overrides}]}


BAD_GRIDS = {  # case -> (the change of the tiny grid, the error line ({g}: the grid), *flags)
    "pe, not pes": ({"pe": ["rope"]}, "pe: Extra inputs are not permitted"),
    "pes repeat": ({"pes": ["rope", "rope"]}, "pes repeat"),
    "unknown pe": ({"pes": ["rope", "no_such_pe"]},
                   "pes.1: unknown position encoding 'no_such_pe'"),
    "unknown parameter": ({"pes": [{"name": "linear", "parameters": {"nope": 1}}]},
                          "linear has no such parameter"),
    "randomised": ({"pes": [{"name": "rope", "randomised": 9}]}, "pes: 0.randomised: Extra inputs"),
    "pes every": ({"pes": "every"}, "pes: use a list of encodings"),
    "no pes": ({"pes": []}, "pes: Value should have at least 1 item"),
    "seed -1": ({"seeds": [-1]}, "seed -1 is outside"),
    "preset gpu": ({"presets": [{"name": "gpu"}]}, "unknown preset 'gpu'"),
    "a preset of 500 characters": ({"presets": [{"name": "g" * 500}]},
                                   f"unknown preset '{'g' * 57}...'; use one of"),
    "lr 0": (cpu(lr=0), "overrides.lr: Input should be"),
    "seeds overridden": (cpu(seeds=[1]), "seeds are set by"),
    "an override of no preset field": (cpu(epoch=3), "overrides: unknown preset field epoch"),
    "an override of a 500-character field": (cpu(**{"e" * 500: 3}),
                                             f"unknown preset field {'e' * 97}..."),
    "slurm gpus -1": ({"slurm": {"gpus": -1}},
                      "slurm.gpus: Input should be greater than or equal to 0"),
    "no dataset": ({"datasets": ["no/such/folder"]}, "datasets.0:"),
    "a dataset path with a NUL byte": ({"datasets": ["ds\u0000"]},
                                       "datasets.0: 'ds\\x00': embedded null byte"),
    "no config": ({"configs": ["nocfg"]}, "has no config nocfg"),
    "no config of 500 characters": ({"configs": ["c" * 500]},
                                    f"has no config {'c' * 97}...; configs: recursive"),
    "configs of 500 characters repeat": ({"configs": ["c" * 500] * 2},
                                         f"configs repeat {'c' * 97}... (given"),
    "--partition, local": ({}, "error: --partition: for --executor slurm or submitit-local only",
                           "--partition", "gpu"),
    "--jobs, slurm": ({}, "error: --jobs: for --executor local only",
                      "--executor", "slurm", "--jobs", "2"),
    "--gpus -1": ({}, "error: --gpus: Input should be greater than",
                  "--executor", "slurm", "--gpus", "-1"),
    "--json without --status": ({}, "error: --json: for --status only", "--json"),
    "--status beside a GRID": ({}, "error: --status takes only the sweep folder", "--status", "."),
    # lax values are refused when the grid is read
    **{f"seeds = {json.dumps(seeds)}": ({"seeds": seeds}, "{g}: seeds.0")
       for seeds in ([True], [False, 1], [1.0], ["1"])},
    'slurm time_min = "600"': ({"slurm": {"time_min": "600"}}, "{g}: slurm.time_min"),
    "slurm gpus = true": ({"slurm": {"gpus": True}}, "{g}: slurm.gpus"),
    "epochs = null": (cpu(epochs=None), "{g}: presets.0.overrides: epochs: null overrides nothing"),
    "randomized = true": ({"pes": [{"name": "rope", "randomized": True}]},
                          "{g}: pes: 0.randomized"),
}  # fmt: skip
LAX = [("epochs", "3"), ("epochs", True), ("epochs", 3.0), ("lr", "0.001"), ("lr", True)]
LAX += [("max_steps", "2"), ("batch_size", 32.0)]
BAD_GRIDS |= {
    f"{name} = {json.dumps(value)}": (cpu(**{name: value}), f"{{g}}: presets.0.overrides.{name}")
    for name, value in LAX
}


@pytest.mark.parametrize("args", [[], ["--out", "S"], ["g.json"]])
def test_a_sweep_given_no_grid_or_no_out_is_one_error_line(assert_clean_error, cli, args):
    assert_clean_error(cli("sweep", *args), 2, "give a GRID file and --out SWEEP_DIR, or --status")


@pytest.mark.parametrize("case", sorted(BAD_GRIDS))
def test_bad_grid_or_executor_flag_is_one_error_line_exit_2_and_nothing_written(
    assert_clean_error, cli, recorded, sweep_grid, tmp_path, case
):
    change, message, *flags = BAD_GRIDS[case]
    grid = write_grid(tmp_path / "g.json", {**sweep_grid(["rope"]), **change})
    result = cli("sweep", str(grid), "--out", str(tmp_path / "S"), *flags)
    with recorded("bad_input", f"grid {case}"):
        assert_clean_error(result, 2, message.format(g=grid))
        assert result.stdout == ""
        assert not (tmp_path / "S").exists()


def test_grid_file_that_is_not_toml_is_one_error_line(assert_clean_error, cli, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text("pes = [")
    line = assert_clean_error(cli("sweep", str(grid), "--out", str(tmp_path / "S")), 2)
    assert line.startswith(f"error: grid file {grid} is not valid TOML")


def test_out_that_is_some_other_folder_is_refused(assert_clean_error, cli, sweep_grid, tmp_path):
    grid = write_grid(tmp_path / "g.json", sweep_grid(["rope"]))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    result = cli("sweep", str(grid), "--out", str(tmp_path / "mine"))
    assert_clean_error(result, 2, "not a sweep folder")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("hidden", "executor", "hint"),
    [("submitit", "submitit-local", "--executor submitit-local needs submitit"),
     ("submitit", "slurm", "--executor slurm needs submitit"),
     ("torch", "local", "training needs the train extra")],
)  # fmt: skip
def test_missing_extra_is_one_error_line_exit_2(
    assert_clean_error, cli, sweep_grid, tmp_path, monkeypatch, hidden, executor, hint
):
    grid = write_grid(tmp_path / "g.json", sweep_grid(["rope"]))
    monkeypatch.setitem(sys.modules, hidden, None)  # its import fails, as when not installed
    result = cli("sweep", grid, "--out", tmp_path / "S", "--executor", executor)
    assert_clean_error(result, 2)
    extra = "'posgen[slurm]'" if hidden == "submitit" else "'posgen[train]'"
    assert result.stderr.strip().splitlines() == [f"error: {hint}: pip install {extra}"]
    assert not (tmp_path / "S").exists()


# --- executors ------------------------------------------------------------------------------


def test_a_local_sweep_stopped_by_signals_resumes_restores_damage_then_skips_finished_runs(
    assert_clean_error, cli, recorded, sweep_grid, expand_grid, tmp_path, reference, run_bytes,
    hook, forked_interpreters,
):  # fmt: skip
    grid = write_grid(tmp_path / "g.json", sweep_grid(["rope", "yarn", "nope"]))
    out = tmp_path / "S"
    args = ["sweep", str(grid), "--out", str(out)]
    sweep = Sweep(out)
    sweep.add(expand_grid(sweep_grid(["rope", "yarn", "nope"])))
    nope = next(run for run in sweep.read().runs if run.pe == "nope")
    run_job(out, nope.job)  # a training of its own, finished: damaged before the last rerun
    finished = run_bytes(sweep.run_folder(nope))

    hook("load:SIGTERM@parent")  # before the first step
    stopped = cli(*args)
    with recorded("kill", "issue 27 class 10: sweep stopped before its first checkpoint"):
        line = assert_clean_error(stopped, 143, "before their first checkpoint", "start them over")
        assert line == stopped.output.strip().splitlines()[-1]
        assert "resume" not in line
        assert "before its first checkpoint; a rerun starts it over" in stopped.stderr
        assert "checkpoint kept" not in stopped.stderr
        assert not any((out / "work").glob("*/checkpoint.pt"))

    hook("step:3:SIGTERM")  # in the worker, mid-epoch 2
    stopped = cli(*args)
    line = assert_clean_error(stopped, 1)
    assert line == stopped.output.strip().splitlines()[-1]
    assert line == (
        f"error: of 1 training, 1 stopped by a signal; see posgen sweep --status "
        f"{out}; rerun to retry and resume them"
    )
    assert states(sweep)["rope"] == ("waiting", "resumes at epoch 2, step 3")

    hook(None)
    (sweep.run_folder(nope) / "predictions.parquet").unlink()
    status = cli("sweep", "--status", out)
    assert status.stdout.splitlines()[-1] == "3 runs: 0 done, 0 running, 0 failed, 3 waiting"
    resumed = cli(*args, "--jobs", "2")
    with recorded("damage", "class 9: posgen sweep reruns a run whose predictions were deleted"):
        assert resumed.exit_code == 0, resumed.output
        assert "note: " in resumed.stderr and "lacks predictions.parquet" in resumed.stderr
        assert "3 runs in 2 trainings; 2 to train" in resumed.stderr
        assert run_bytes(sweep.run_folder(nope)) == finished
    runs = {run.key: sweep.run_folder(run) for run in sweep.read().runs}
    assert {key: run_bytes(runs[key]) for key in reference} == reference

    inodes = {key: folder.stat().st_ino for key, folder in runs.items()}
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert "0 to train" in again.output
    assert {key: folder.stat().st_ino for key, folder in runs.items()} == inodes
    assert forked_interpreters == ["posgen.train.sweep"] * 4  # the workers: 1 + 1 + 2


@pytest.mark.parametrize(
    ("resumable", "said"),
    [(2, "stopped; rerun the same command to resume them from their checkpoints"),
     (0, "stopped before their first checkpoint; rerun the same command to start them over"),
     (1, "stopped (1 with a checkpoint, 1 before its first); rerun the same command to "
         "resume or start them over")],
)  # fmt: skip
def test_a_stopped_local_sweep_says_which_trainings_resume(resumable, said):
    outcome = Outcome(interrupted=["a", "b"], resumable=["a", "b"][:resumable])
    assert stopped_line(outcome) == f"2 trainings {said}"


PASSED_BACK_AT_ONCE = """
import os, signal, threading
from posgen import signals
ask, answered = threading.Event(), threading.Event()

def other_thread():  # like torch's threads: it may take a signal sent to the process
    ask.wait()
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # taken here, at once
    answered.set()

threading.Thread(target=other_thread, daemon=True).start()
taken = []
signal.signal(signal.SIGTERM, lambda number, frame: taken.append(number))
# the sweep answers before the worker waits, and another of its threads takes the signal
os.kill = lambda pid, signum: (ask.set(), answered.wait())
signals.point("step", 1)
print(taken)
"""


@pytest.mark.parametrize(
    ("at", "code", "said"),
    [(None, 2, "{root} is not a sweep folder (no sweep.json)"),
     ("", 2, "{root}/sweep.json has no training {key}"),  # a training of no sweep.json of it
     ("import:SIGINT", 130, "interrupted by SIGINT; no checkpoint yet: a rerun starts it over"),
     ("import:SIGTERM", 143, "interrupted by SIGTERM; no checkpoint yet: a rerun starts it over")],
    ids=["no sweep", "no such training", "SIGINT importing torch", "SIGTERM importing torch"],
)  # fmt: skip
def test_a_fresh_worker_imports_the_sweeps_posgen_and_ends_with_one_line_and_its_code(
    new_sweep, tmp_path, at, code, said
):
    """Started as the sweep starts it, in a folder holding a decoy ``posgen/`` checkout."""
    decoy = tmp_path / "checkout"
    (decoy / "posgen").mkdir(parents=True)
    (decoy / "posgen" / "__init__.py").write_text("raise SystemExit('the decoy was imported')")
    sweep, key = new_sweep(tmp_path / "S")
    root = tmp_path if at is None else sweep.root
    key = "0123456789abcdef" if at == "" else key
    env = {**os.environ, **import_env(), **({signals.HOOK_ENV: at} if at else {})}
    command = [sys.executable, "-m", "posgen.train.sweep", str(root), key]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=decoy)
    assert (done.returncode, done.stdout) == (code, "")
    assert done.stderr.splitlines() == [f"error: {key}: {said.format(root=root, key=key)}"]
    assert not sweep.failure(key).exists()


def test_a_worker_sees_the_signal_its_sweep_passes_back_however_early_it_comes():
    """``SIGNAL@parent``: taken by any of the worker's threads, its handler still runs once."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), signals.HOOK_ENV: "step:1:SIGTERM@parent"}
    done = subprocess.run(
        [sys.executable, "-c", PASSED_BACK_AT_ONCE], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"[{int(signal.SIGTERM)}]"


def test_submitit_local_executor_runs_a_two_run_grid_end_to_end_through_a_preemption(
    cli, sweep_grid, tmp_path, reference, sweep_bytes, hook, forked_interpreters
):
    pytest.importorskip("submitit")
    grid = write_grid(tmp_path / "g.json", sweep_grid(["rope", "yarn"]))
    out = tmp_path / "S"
    hook("step:2:SIGUSR2")  # submitit's preemption signal: checkpoint, requeue, resume, finish
    args = ["sweep", str(grid), "--out", str(out), "--executor", "submitit-local"]
    result = cli(*args, "--time-min", "30")
    assert result.exit_code == 0, result.output
    assert "submitted 1 training as job " in result.output
    assert sweep_bytes(Sweep(out)) == reference
    logs = "".join(path.read_text() for path in (out / "logs" / "slurm").glob("*_log.err"))
    assert "this job is preempted" in logs  # and it still finished: requeued, resumed
    status = cli("sweep", "--status", str(out))
    assert status.output.splitlines()[-1] == "2 runs: 2 done, 0 running, 0 failed, 0 waiting"
    as_json = cli("sweep", "--status", str(out), "--json")
    assert [json.loads(line)["state"] for line in as_json.output.splitlines()] == ["done"] * 2
    assert forked_interpreters == ["submitit.local._local"]  # which ran its task twice


# --- resumable runs -------------------------------------------------------------------------


OWN_STATE = [{"name": "alibi", "randomized": "auto"}, "learned", "sinusoidal", "nope"]
POINTS = ["step:3", "checkpoint:1", "checkpoint:2", "final:1", "final:2"]
RESUMES = [(["rope", "yarn"], point) for point in POINTS]
RESUMES += [([pe], "step:3") for pe in OWN_STATE]  # encodings with a state of their own


@pytest.mark.parametrize(("pes", "point"), RESUMES)
def test_sigterm_checkpoints_and_the_rerun_writes_the_same_bytes(
    new_sweep, sweep_bytes, tmp_path, reference, hook, pes, point
):
    if pes != ["rope", "yarn"]:  # the reference: the same sweep, never stopped
        whole, job = new_sweep(tmp_path / "whole", pes)
        run_job(whole.root, job)
        reference = sweep_bytes(whole)
    sweep, job = new_sweep(tmp_path / "S", pes)
    hook(f"{point}:SIGTERM")
    with pytest.raises(Interrupted):
        run_job(sweep.root, job)
    assert (sweep.work(job) / "checkpoint.pt").is_file()
    assert {state for state, _ in states(sweep).values()} <= {"waiting", "done"}
    hook(None)
    run_job(sweep.root, job)
    assert sweep_bytes(sweep) == reference
    assert not sweep.work(job).exists()


def test_a_grid_grown_by_an_encoding_of_a_stopped_training_trains_it_again_whole(
    cli, new_sweep, sweep_bytes, sweep_grid, expand_grid, tmp_path, reference, hook
):  # the checkpoint holds rope's selection only: yarn needs every evaluation from the start
    sweep, job = new_sweep(tmp_path / "S", ["rope"])
    status = cli("sweep", "--status", sweep.root).output.splitlines()
    assert status[-1] == "1 run: 0 done, 0 running, 0 failed, 1 waiting"
    hook("step:3:SIGTERM")
    with pytest.raises(Interrupted):
        run_job(sweep.root, job)
    hook(None)
    sweep.add(expand_grid(sweep_grid(["rope", "yarn"])))
    assert [grown.key for grown in jobs_of(sweep.read().runs)] == [job]  # one training
    run_job(sweep.root, job)
    assert sweep_bytes(sweep) == reference


@pytest.fixture
def forked_worker(fork_child):
    """``forked_worker(sweep, job, hook)``: a forked ``job_main`` worker: pid, output's read end."""

    def start(sweep: Sweep, job: str, hook: str) -> tuple[int, int]:
        def work() -> None:
            os.environ[signals.HOOK_ENV] = hook
            sys.exit(job_main([str(sweep.root), job]))

        return fork_child(work)

    return start


def exit_code(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.parametrize("point", ["step:3", "checkpoint:2", "final:2"])
def test_sigkill_leaves_no_finished_looking_folder_and_the_next_run_resumes(
    new_sweep, sweep_bytes, forked_worker, tmp_path, reference, point
):
    sweep, job = new_sweep(tmp_path / "S")
    pid, output = forked_worker(sweep, job, f"{point}:SIGKILL")
    assert exit_code(pid) == -signal.SIGKILL
    os.close(output)
    finished = {run.pe for run in sweep.read().runs if sweep.run_folder(run).exists()}
    assert finished == ({"rope"} if point == "final:2" else set())
    assert states(sweep)["yarn"][0] == "waiting"
    run_job(sweep.root, job)
    assert sweep_bytes(sweep) == reference
    assert sorted(p.name for p in (sweep.root / "runs").iterdir()) == sorted(reference)


def test_status_is_true_while_a_worker_runs_stops_and_resumes(
    new_sweep, sweep_bytes, forked_worker, tmp_path, reference
):
    sweep, job = new_sweep(tmp_path / "S")
    assert states(sweep) == {"rope": ("waiting", ""), "yarn": ("waiting", "")}
    pid, output = forked_worker(sweep, job, "step:3:SIGSTOP")  # alive, holding its lock
    os.waitpid(pid, os.WUNTRACED)
    assert states(sweep)["yarn"] == ("running", "epoch 2, step 2")
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGCONT)
    assert exit_code(pid) == 128 + signal.SIGTERM
    with open(output) as said:  # a few lines: the pipe never fills
        last = said.read().strip().splitlines()[-1]
    assert last == f"error: {job}: interrupted by SIGTERM; checkpoint kept"
    assert states(sweep)["yarn"] == ("waiting", "resumes at epoch 2, step 3")
    run_job(sweep.root, job)
    assert states(sweep) == {run.pe: ("done", run.folder) for run in sweep.read().runs}
    assert sweep_bytes(sweep) == reference


def test_status_names_a_failed_training_with_its_reason(new_sweep, tmp_path):
    sweep, job = new_sweep(tmp_path / "S", ["resonance"])
    sweep.record_failure(job, "CUDA out of memory.\nTried to allocate 2 GiB")
    assert states(sweep) == {"resonance": ("failed", "CUDA out of memory. Tried to allocate 2 GiB")}
    sweep.work(job).mkdir(parents=True)
    with exclusive(sweep.work(job)):  # a live worker took the training up again
        assert states(sweep)["resonance"] == ("running", "before its first checkpoint")


def test_a_plugin_calling_sys_exit_0_in_training_is_a_failed_training_never_done(
    new_sweep, hostile_plugins, tmp_path
):
    sweep, job = new_sweep(tmp_path / "S", ["h27plugins:QUITS"])
    with pytest.raises(RunError, match=r"plugin encoding h27_quits .*SystemExit: 0"):
        run_job(sweep.root, job)
    assert states(sweep)["h27_quits"][0] == "failed"
    outcome, said = Outcome(), []
    _settle(sweep, jobs_of(sweep.read().runs)[0], 0, outcome, said.append)  # a worker's exit 0
    assert list(outcome.failed) == [job] and said[0].endswith(
        "failed: its worker exited 0 without writing its run folders"
    )


@pytest.mark.parametrize(("code", "reason"), [(-9, "killed by SIGKILL"), (1, "failed (see {log})")])
def test_a_worker_ended_without_a_reason_recorded_is_failed_with_one(
    new_sweep, tmp_path, code, reason
):  # the OOM killer's SIGKILL; an exit 1 its worker could not record (its log says why)
    sweep, job = new_sweep(tmp_path / "S")
    outcome, said = Outcome(), []
    _settle(sweep, jobs_of(sweep.read().runs)[0], code, outcome, said.append)
    reason = reason.format(log=sweep.logs / f"{job}.log")
    assert outcome.failed == {job: reason} and said[0].endswith(f": failed: {reason}")


def test_posgen_train_stopped_and_resumed_writes_what_the_sweep_writes(
    assert_clean_error, cli, sweep_grid, expand_grid, tiny_training_dataset, reference, hook,
    run_bytes, tmp_path,
):  # fmt: skip
    grid = sweep_grid(["yarn"])
    (run,) = expand_grid(grid)
    out = tmp_path / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in grid["presets"][0]["overrides"].items()]
    data = ["--data", str(tiny_training_dataset), "--config", "recursive"]
    args = ["train", *data, "--pe", "yarn", "--seed", "3", *flags, "--out", str(out), "-q"]
    hook("step:2:SIGTERM")
    assert_clean_error(cli(*args), 143, "interrupted by SIGTERM; checkpoint kept in ")
    hook(None)
    resumed = cli(*args)
    assert resumed.exit_code == 0, resumed.output
    assert run_bytes(out) == reference[run.key]
