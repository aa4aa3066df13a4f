"""``posgen sweep``: grids, run hashes, executors, status, and runs that survive being killed.

Runs are stopped at exact points (``POSGEN_SIGNAL_AT``, :func:`posgen.signals.point`),
never by timing: SIGTERM in this process (the handlers see it as they would from outside),
SIGKILL and SIGSTOP in worker processes.
"""

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


from posgen import signals, write_dataset  # noqa: E402
from posgen.cli.sweep import resolve_encoding  # noqa: E402
from posgen.signals import Interrupted  # noqa: E402
from posgen.spec import default_benchmark  # noqa: E402
from posgen.store.safety import exclusive  # noqa: E402
from posgen.train.config import Grid, expand, jobs_of, read_grid, stable_hash  # noqa: E402
from posgen.train.sweep import Sweep, run_job, run_states  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32, "batch_size": 32}
TIMING = ("seconds", "train_seconds", "wall_seconds")
"""Wall-clock fields (metrics.jsonl, results.json): the only bytes that differ between runs."""


@pytest.fixture(autouse=True)
def _one_thread_and_fresh_kill_counts():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    signals._passes.clear()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep") / "tiny"
    write_dataset(default_benchmark(("recursive",), train_size=96, val_size=16, test_size=8), root)
    return root


def grid_dict(data: Path, pes: list[str], **extra) -> dict:
    overrides = {**TINY, "epochs": 2}
    return {
        "datasets": [str(data)],
        "pes": pes,
        "seeds": [3],
        "presets": [{"name": "cpu", "overrides": overrides}],
        **extra,
    }


def expand_grid(grid: dict) -> list:
    return expand(Grid.model_validate(grid), resolve_encoding)


def write_grid(path: Path, grid: dict) -> Path:
    path.write_text(json.dumps(grid))
    return path


def new_sweep(root: Path, grid: dict) -> Sweep:
    sweep = Sweep(root)
    sweep.add(expand_grid(grid))
    return sweep


def only_job(sweep: Sweep) -> str:
    (job,) = jobs_of(sweep.read().runs)
    return job.key


def run_bytes(folder: Path) -> dict[str, object]:
    """Every file of a run folder: bytes, except metrics.jsonl and results.json, whose
    timings are left out."""
    files: dict[str, object] = {
        path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()
    }
    lines = [json.loads(line) for line in files.pop("metrics.jsonl").decode().splitlines()]
    files["metrics"] = [{k: v for k, v in line.items() if k not in TIMING} for line in lines]
    record = json.loads(files.pop("results.json"))
    files["results"] = {k: v for k, v in record.items() if k not in TIMING}
    return files


def sweep_bytes(sweep: Sweep) -> dict[str, dict[str, object]]:
    return {run.key: run_bytes(sweep.run_folder(run)) for run in sweep.read().runs}


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict[str, dict[str, object]]:
    """An uninterrupted rope + yarn training (one job, two run folders)."""
    signals._passes.clear()
    torch.set_num_threads(1)
    sweep = new_sweep(tmp_path_factory.mktemp("reference") / "S", grid_dict(data, ["rope", "yarn"]))
    run_job(sweep.root, only_job(sweep))
    return sweep_bytes(sweep)


def states(sweep: Sweep) -> dict[str, tuple[str, str]]:
    return {s.run.pe: (s.state, s.detail) for s in run_states(sweep)}


# --- grids and hashes -------------------------------------------------------------------


def test_grid_expands_seed_outermost_and_groups_pes_that_train_alike(data):
    linear = {"name": "linear", "parameters": {"factor": 2}}
    runs = expand_grid(
        {**grid_dict(data, ["rope", "yarn", "resonance", linear, "nope"]), "seeds": [5, 1]}
    )
    labels = ["rope", "yarn", "resonance", "linear(factor=2)", "nope"]
    assert [(run.seed, run.pe) for run in runs] == [(5, pe) for pe in labels] + [
        (1, pe) for pe in labels
    ]
    jobs = [[run.pe for run in job.runs] for job in jobs_of(runs)]
    per_seed = [["rope", "yarn", "linear(factor=2)"], ["resonance"], ["nope"]]
    assert jobs == per_seed + per_seed


def test_grid_without_seeds_takes_each_presets_seeds(data):
    runs = expand_grid({**grid_dict(data, ["rope"]), "seeds": None})
    assert [run.seed for run in runs] == [5549, 4955, 42]


def test_run_hash_is_stable_and_independent_of_where_the_data_lies(data, tmp_path):
    moved = tmp_path / "elsewhere" / data.name
    shutil.copytree(data, moved)
    keys = [
        [run.key for run in expand_grid(grid_dict(where, ["rope"]))]
        for where in (data, data, moved)
    ]
    assert keys[0] == keys[1] == keys[2]


def test_run_hash_changes_with_every_field_of_the_run(data):
    base = grid_dict(data, ["rope"])
    variants = [
        base,
        {**base, "seeds": [4]},
        {**base, "pes": ["resonance"]},
        {**base, "pes": [{"name": "linear", "parameters": {"factor": 2}}]},
        {**base, "pes": [{"name": "linear", "parameters": {"factor": 3}}]},
        {**base, "presets": [{"name": "cpu", "overrides": {**TINY, "epochs": 3}}]},
        {**base, "presets": [{"name": "paper", "overrides": {**TINY, "epochs": 2}}]},
    ]
    keys = {expand_grid(grid)[0].key for grid in variants}
    assert len(keys) == len(variants)


def test_stable_hash_is_sha256_of_canonical_json():
    # sha256(b'{"pe":"rope","seed":1}'): a changed hash would retrain every finished run
    assert stable_hash({"seed": 1, "pe": "rope"}) == "c8d59a9e137f9512"


def test_every_registered_pe_is_all(data):
    from posgen.encodings import available

    grid = Grid.model_validate({**grid_dict(data, "all")})
    runs = expand(grid, resolve_encoding, lambda: list(available()))
    assert [run.pe for run in runs] == list(available())


# --- bad grid files and missing extras -------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pe": ["rope"]}, "pe: Extra inputs are not permitted"),
        ({"pes": ["rope", "rope"]}, "pes repeat"),
        ({"pes": ["rope", "no_such_pe"]}, "pes.1: unknown position encoding 'no_such_pe'"),
        ({"pes": [{"name": "linear", "parameters": {"nope": 1}}]}, "linear has no such parameter"),
        ({"pes": [{"name": "rope", "randomised": 9}]}, "pes: 0.randomised: Extra inputs"),
        ({"pes": "every"}, "pes: use a list of encodings"),
        ({"pes": []}, "pes: Value should have at least 1 item"),
        ({"seeds": [-1]}, "seed -1 is outside"),
        ({"presets": [{"name": "gpu"}]}, "unknown preset 'gpu'"),
        ({"presets": [{"name": "cpu", "overrides": {"lr": 0}}]}, "overrides.lr: Input should be"),
        ({"presets": [{"name": "cpu", "overrides": {"seeds": [1]}}]}, "seeds are set by"),
        ({"slurm": {"gpus": -1}}, "slurm.gpus: Input should be greater than or equal to 0"),
        ({"datasets": ["no/such/folder"]}, "datasets.0:"),
        ({"configs": ["cot"]}, "has no config cot"),
    ],
)
def test_bad_grid_is_one_error_line_exit_2_and_nothing_written(
    assert_clean_error, cli, data, tmp_path, change, message
):
    grid = write_grid(tmp_path / "g.json", {**grid_dict(data, ["rope"]), **change})
    result = cli("sweep", str(grid), "--out", str(tmp_path / "S"))
    assert_clean_error(result, 2, message)
    assert result.stdout == ""
    assert not (tmp_path / "S").exists()


def test_grid_file_that_is_not_toml_is_one_error_line(assert_clean_error, cli, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text("pes = [")
    result = cli("sweep", str(grid), "--out", str(tmp_path / "S"))
    line = assert_clean_error(result, 2)
    assert line.startswith(f"error: grid file {grid} is not valid TOML")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--partition", "gpu"], "--partition: for --executor slurm or submitit-local only"),
        (["--executor", "slurm", "--jobs", "2"], "--jobs: for --executor local only"),
        (["--executor", "slurm", "--gpus", "-1"], "--gpus: Input should be greater than"),
    ],
)
def test_executor_flags_are_checked_before_anything_is_written(
    assert_clean_error, cli, data, tmp_path, flags, message
):
    grid = write_grid(tmp_path / "g.json", grid_dict(data, ["rope"]))
    args = ["sweep", str(grid), "--out", str(tmp_path / "S"), *flags]
    result = cli(*args)
    assert assert_clean_error(result, 2).startswith(f"error: {message}")
    assert result.stdout == ""
    assert not (tmp_path / "S").exists()


def test_out_that_is_some_other_folder_is_refused(assert_clean_error, cli, data, tmp_path):
    grid = write_grid(tmp_path / "g.json", grid_dict(data, ["rope"]))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    result = cli("sweep", str(grid), "--out", str(tmp_path / "mine"))
    assert_clean_error(result, 2, "not a sweep folder")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("hidden", "executor", "hint"),
    [
        ("submitit", "submitit-local", "--executor submitit-local needs submitit"),
        ("submitit", "slurm", "--executor slurm needs submitit"),
        ("torch", "local", "training needs the train extra"),
    ],
)
def test_missing_extra_is_one_error_line_exit_2(
    assert_clean_error, data, tmp_path, hidden, executor, hint
):
    grid = write_grid(tmp_path / "g.json", grid_dict(data, ["rope"]))
    script = (
        f"import sys; sys.modules[{hidden!r}] = None; from posgen.cli import main; "
        f"main(['sweep', {str(grid)!r}, '--out', {str(tmp_path / 'S')!r}, "
        f"'--executor', {executor!r}])"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert_clean_error(result, 2)
    assert result.stderr.strip().splitlines() == [
        f"error: {hint}: pip install "
        + ("'posgen[slurm]'" if hidden == "submitit" else "'posgen[train]'")
    ]
    assert not (tmp_path / "S").exists()


# --- executors ------------------------------------------------------------------------------


def test_local_sweep_stopped_by_sigterm_exits_1_resumes_on_rerun_then_skips_finished_runs(
    assert_clean_error, cli, data, tmp_path, reference, monkeypatch
):
    grid = write_grid(tmp_path / "g.json", grid_dict(data, ["rope", "yarn"]))
    args = ["sweep", str(grid), "--out", str(tmp_path / "S")]
    monkeypatch.setenv(signals.HOOK_ENV, "step:5:SIGTERM")  # in the worker, mid-epoch 2
    stopped = cli(*args)
    line = assert_clean_error(stopped, 1)
    assert stopped.output.strip().splitlines()[-1] == line
    assert line == (
        f"error: 0 of 1 trainings failed, 1 stopped by a signal; see posgen sweep --status "
        f"{tmp_path / 'S'}; rerun to retry and resume them"
    )
    sweep = Sweep(tmp_path / "S")
    assert states(sweep)["rope"] == ("waiting", "resumes at epoch 2, step 5")
    monkeypatch.delenv(signals.HOOK_ENV)
    resumed = cli(*args, "--jobs", "2")
    assert resumed.exit_code == 0, resumed.output
    assert sweep_bytes(sweep) == reference
    inodes = {run.key: sweep.run_folder(run).stat().st_ino for run in sweep.read().runs}
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert "0 to train" in again.output
    assert {r.key: sweep.run_folder(r).stat().st_ino for r in sweep.read().runs} == inodes


def test_sigterm_to_a_local_sweep_stops_its_workers_with_their_checkpoints(
    assert_clean_error, cli, data, tmp_path, reference, monkeypatch
):
    grid = write_grid(tmp_path / "g.json", grid_dict(data, ["rope", "yarn"]))
    args = ["sweep", str(grid), "--out", str(tmp_path / "S")]
    monkeypatch.setenv(signals.HOOK_ENV, "step:3:SIGTERM@parent")  # the worker signals us
    stopped = cli(*args)
    line = assert_clean_error(stopped, 143)
    assert stopped.output.strip().splitlines()[-1] == line
    assert line == (
        "error: interrupted by SIGTERM; 1 trainings stopped; rerun the same command to resume "
        "them from their checkpoints"
    )
    sweep = Sweep(tmp_path / "S")
    assert states(sweep)["yarn"] == ("waiting", "resumes at epoch 1, step 3")
    monkeypatch.delenv(signals.HOOK_ENV)
    run_job(sweep.root, only_job(sweep))  # in-process: the rerun of the command is tested above
    assert sweep_bytes(sweep) == reference


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


def test_a_worker_sees_the_signal_its_sweep_passes_back_however_early_it_comes():
    """The ``SIGNAL@parent`` hook: the sweep's answer may come before the worker waits (a
    loaded machine makes that likely) and be taken by any of the worker's threads; the
    worker's handler still runs, once."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), signals.HOOK_ENV: "step:1:SIGTERM@parent"}
    done = subprocess.run(
        [sys.executable, "-c", PASSED_BACK_AT_ONCE], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"[{int(signal.SIGTERM)}]"


def test_submitit_local_executor_runs_a_two_run_grid_end_to_end_through_a_preemption(
    cli, data, tmp_path, reference, monkeypatch
):
    pytest.importorskip("submitit")
    grid = write_grid(tmp_path / "g.json", grid_dict(data, ["rope", "yarn"]))
    out = tmp_path / "S"
    # submitit's preemption signal after step 2: checkpoint, requeue, resume, finish
    monkeypatch.setenv(signals.HOOK_ENV, "step:2:SIGUSR2")
    args = ["sweep", str(grid), "--out", str(out), "--executor", "submitit-local"]
    result = cli(*args, "--time-min", "30")
    assert result.exit_code == 0, result.output
    assert "submitted 1 trainings as job" in result.output
    assert sweep_bytes(Sweep(out)) == reference
    logs = "".join(path.read_text() for path in (out / "logs" / "slurm").glob("*_log.err"))
    assert "this job is preempted" in logs  # and it still finished: requeued, resumed
    status = cli("sweep", "--status", str(out))
    assert status.output.splitlines()[-1] == "2 runs: 2 done, 0 running, 0 failed, 0 waiting"
    as_json = cli("sweep", "--status", str(out), "--json")
    assert [json.loads(line)["state"] for line in as_json.output.splitlines()] == ["done"] * 2


# --- resumable runs -------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["step:4", "checkpoint:1", "checkpoint:2", "final:1", "final:2"])
def test_sigterm_checkpoints_and_the_rerun_writes_the_same_bytes(
    data, tmp_path, reference, monkeypatch, point
):
    sweep = new_sweep(tmp_path / "S", grid_dict(data, ["rope", "yarn"]))
    job = only_job(sweep)
    monkeypatch.setenv(signals.HOOK_ENV, f"{point}:SIGTERM")
    with pytest.raises(Interrupted):
        run_job(sweep.root, job)
    assert (sweep.work(job) / "checkpoint.pt").is_file()
    assert {state for state, _ in states(sweep).values()} <= {"waiting", "done"}
    monkeypatch.delenv(signals.HOOK_ENV)
    run_job(sweep.root, job)
    assert sweep_bytes(sweep) == reference
    assert not sweep.work(job).exists()


@pytest.mark.parametrize(
    "pe", [{"name": "alibi", "randomized": "auto"}, "learned", "sinusoidal", "nope"]
)
def test_resumed_runs_match_for_encodings_with_their_own_state(data, tmp_path, monkeypatch, pe):
    grid = grid_dict(data, [pe])
    whole = new_sweep(tmp_path / "whole", grid)
    run_job(whole.root, only_job(whole))
    sweep = new_sweep(tmp_path / "S", grid)
    monkeypatch.setenv(signals.HOOK_ENV, "step:4:SIGTERM")
    with pytest.raises(Interrupted):
        run_job(sweep.root, only_job(sweep))
    monkeypatch.delenv(signals.HOOK_ENV)
    run_job(sweep.root, only_job(sweep))
    assert sweep_bytes(sweep) == sweep_bytes(whole)


def _worker(sweep: Sweep, job: str, kill: str) -> subprocess.Popen:
    env = {**os.environ, signals.HOOK_ENV: kill, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "posgen.train.sweep", str(sweep.root), job]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)


def test_sigkill_leaves_no_finished_looking_folder_and_the_next_run_resumes(
    data, tmp_path, reference
):
    """Workers SIGKILLed mid-step, mid-checkpoint and while writing the second run folder
    (three sweeps, their workers started at once: each pays torch's import)."""
    points = ["step:4", "checkpoint:2", "final:2"]
    sweeps = [new_sweep(tmp_path / f"S{i}", grid_dict(data, ["rope", "yarn"])) for i in range(3)]
    workers = [_worker(sweep, only_job(sweep), f"{point}:SIGKILL")
               for sweep, point in zip(sweeps, points, strict=True)]  # fmt: skip
    for worker in workers:
        worker.communicate()
    for point, sweep, worker in zip(points, sweeps, workers, strict=True):
        assert worker.returncode == -signal.SIGKILL, point
        finished = {run.pe for run in sweep.read().runs if (sweep.run_folder(run)).exists()}
        assert finished == ({"rope"} if point == "final:2" else set()), point
        assert states(sweep)["yarn"][0] == "waiting", point
        run_job(sweep.root, only_job(sweep))
        assert sweep_bytes(sweep) == reference, point
        assert sorted(p.name for p in (sweep.root / "runs").iterdir()) == sorted(reference)


def test_status_is_true_while_a_worker_runs_stops_and_resumes(data, tmp_path, reference):
    sweep = new_sweep(tmp_path / "S", grid_dict(data, ["rope", "yarn"]))
    job = only_job(sweep)
    assert states(sweep) == {"rope": ("waiting", ""), "yarn": ("waiting", "")}
    worker = _worker(sweep, job, "step:4:SIGSTOP")  # stops itself, alive, holding its lock
    os.waitpid(worker.pid, os.WUNTRACED)
    assert states(sweep)["yarn"] == ("running", "epoch 2, step 3")
    worker.send_signal(signal.SIGTERM)
    worker.send_signal(signal.SIGCONT)
    _, stderr = worker.communicate()
    assert worker.returncode == 128 + signal.SIGTERM
    assert stderr.strip().splitlines()[-1] == (
        f"error: {job}: interrupted by SIGTERM; checkpoint kept"
    )
    assert states(sweep)["yarn"] == ("waiting", "resumes at epoch 2, step 4")
    run_job(sweep.root, job)
    assert states(sweep) == {run.pe: ("done", run.folder) for run in sweep.read().runs}
    assert sweep_bytes(sweep) == reference


def test_status_names_a_failed_training_with_its_reason(data, tmp_path):
    sweep = new_sweep(tmp_path / "S", grid_dict(data, ["resonance"]))
    job = only_job(sweep)
    sweep.record_failure(job, "CUDA out of memory.\nTried to allocate 2 GiB")
    assert states(sweep) == {"resonance": ("failed", "CUDA out of memory. Tried to allocate 2 GiB")}
    sweep.work(job).mkdir(parents=True)
    with exclusive(sweep.work(job)):  # a live worker took the training up again
        assert states(sweep)["resonance"] == ("running", "before its first checkpoint")


def test_posgen_train_sigterm_is_one_error_line_143_and_the_rerun_resumes(
    assert_clean_error, cli, data, tmp_path, reference, monkeypatch
):
    grid = grid_dict(data, ["yarn"])
    (run,) = expand_grid(grid)
    out = tmp_path / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, "epochs": 2}.items()]
    args = ["train", "--data", str(data), "--pe", "yarn", "--seed", "3", *flags, "--out", str(out)]
    monkeypatch.setenv(signals.HOOK_ENV, "step:2:SIGTERM")
    stopped = cli(*args, "-q")
    line = assert_clean_error(stopped, 143)
    assert line.startswith("error: interrupted by SIGTERM; checkpoint kept in ")
    assert stopped.stdout == ""
    assert not out.exists()
    monkeypatch.delenv(signals.HOOK_ENV)
    resumed = cli(*args)
    assert resumed.exit_code == 0, resumed.output
    assert f"{out}: resuming from its checkpoint" in resumed.output
    assert run_bytes(out) == reference[run.key]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_the_grids_in_the_repo_and_the_readme_grid_are_valid_grids(tmp_path):
    paper = ["rope", "yarn", "resonance", "resonance_yarn"]
    assert [pe.name for pe in read_grid(ROOT / "grids" / "paper.toml").pes] == paper
    from posgen.encodings import available

    assert read_grid(ROOT / "grids" / "results.toml").pes == "builtin"  # the paper's four too
    assert set(paper) < {name for name, pe in available().items() if pe.source == "built-in"}
    assert read_grid(ROOT / "grids" / "results-all.toml").pes == "all"
    section = (ROOT / "README.md").read_text().split("### Sweeps", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "readme.toml").write_text(block)
    example = read_grid(tmp_path / "readme.toml")
    assert example.slurm.max_parallel == 20
