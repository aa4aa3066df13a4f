"""Hostile use of ``posgen train``, ``posgen results`` and ``posgen score`` (issue 21).

Each class is tried with several variants: signals at named moments (the
``POSGEN_SIGNAL_AT`` hook, no sleeps), a dataset replaced or damaged under a run, damaged
and duplicated run folders, inputs that ask for unbounded memory, outputs named over inputs
or into a dataset, flags wrong in ways the data side already refuses. Every case must end
in one ``error:`` line with the right exit status (or a correct result), and no file but
the named outputs may change. Counts go to the session summary (``tests/hardening_counts.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import posgen.signals  # noqa: E402
from posgen.dataset import write_dataset  # noqa: E402
from posgen.signals import Interrupted  # noqa: E402
from posgen.spec import default_benchmark  # noqa: E402
from posgen.store.layout import TMP_TAG  # noqa: E402
from posgen.train.config import (  # noqa: E402
    estimate_run,
    preset,
    refusal,
)
from posgen.train.trainer import RunData  # noqa: E402
from tests.cli_support import assert_clean_error, error_lines, invoke  # noqa: E402
from tests.data_damage import rewrite_rows  # noqa: E402
from tests.hardening_counts import recorded  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--layers",
    "1",
    "--hidden",
    "16",
    "--heads",
    "2",
    "--intermediate",
    "32",
    "--batch-size",
    "16",
    "--eval-batch-size",
    "8",
    "--epochs",
    "1",
    "--max-steps",
    "2",
]
SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"]
CODES = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}


@pytest.fixture(autouse=True)
def _one_torch_thread_and_memory_unknown(monkeypatch):
    """One torch thread; the machine's free memory never decides a test (refusal tests set it)."""
    monkeypatch.setattr("posgen.cli.train.available_bytes", lambda: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def snapshot(*folders: Path) -> dict[str, str]:
    """sha256 of every file (links not followed) under ``folders``."""
    files = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and not path.is_symlink():
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def train_args(data: Path, out: Path, *extra: object) -> list[object]:
    return [
        "train",
        "--data",
        data,
        "--pe",
        "rope",
        "--seed",
        "0",
        "--out",
        out,
        "-q",
        *TINY,
        *extra,
    ]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train-hostile")


@pytest.fixture(scope="module")
def data(base) -> Path:
    root = base / "ds"
    write_dataset(default_benchmark(("recursive",), train_size=48, val_size=8, test_size=8), root)
    return root


@pytest.fixture(scope="module")
def run(base, data) -> Path:
    """One finished run folder (never changed by the tests: they copy it)."""
    out = base / "runs" / "r0"
    result = invoke(*train_args(data, out))
    assert result.exit_code == 0, result.output
    return out


def fresh_data(tmp_path: Path, data: Path) -> Path:
    copy = tmp_path / "ds"
    shutil.copytree(data, copy)
    return copy


def copy_run(run: Path, where: Path) -> Path:
    shutil.copytree(run, where)
    return where


# --- 1. signals: one line and 128 + signal at every moment --------------------------------

TRAIN_POINTS = ["cli", "load", "step", "validation", "write"]


@pytest.mark.parametrize("signame", SIGNALS)
@pytest.mark.parametrize("point", TRAIN_POINTS)
def test_a_signal_at_any_moment_of_a_run_is_one_line_and_its_exit_code(
    tmp_path, data, monkeypatch, point, signame
):
    out = tmp_path / "run"
    before = snapshot(data)
    monkeypatch.setenv(posgen.signals.HOOK_ENV, f"{point}:{signame}")
    result = invoke(*train_args(data, out))
    left = sorted(p.name for p in tmp_path.iterdir())
    resume = tmp_path / ".run.posgen-resume"  # the checkpoint a rerun resumes from (issue 19)
    with recorded("kill", f"train:{point}:{signame}"):
        line = assert_clean_error(result, CODES[signame], f"interrupted by {signame}")
        assert not os.path.lexists(out)
        assert left in ([], [resume.name])
        assert (str(resume) in line) == (left == [resume.name])
        assert snapshot(data) == before


@pytest.mark.parametrize(
    ("point", "signame"), [("startup", name) for name in SIGNALS] + [("import", "SIGTERM")]
)
def test_a_signal_before_the_commands_or_torch_are_imported_is_one_line(
    tmp_path, data, point, signame
):
    """A real process (the ``posgen`` entry point): the moments in-process tests cannot reach.
    A signal while torch is imported is held until the import ends, then raised."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), posgen.signals.HOOK_ENV: f"{point}:{signame}"}
    command = [sys.executable, "-m", "posgen", *map(str, train_args(data, out))]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    with recorded("kill", f"train:{point}:{signame}"):
        assert done.returncode == CODES[signame], done.stderr
        assert lines == [f"error: interrupted by {signame}; no partial output was left"]
        assert not os.path.lexists(out)


@pytest.mark.parametrize("signame", SIGNALS)
def test_a_signal_after_the_command_finished_still_sets_the_exit_status(tmp_path, run, signame):
    """Sent once the command has printed its last line, before the interpreter exits (a
    real process: Python restores the default actions while it shuts down)."""
    out = tmp_path / "R.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT), posgen.signals.HOOK_ENV: f"exit:{signame}"}
    command = [sys.executable, "-m", "posgen", "results", str(run), "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    with recorded("kill", f"results:exit:{signame}"):
        assert done.returncode == CODES[signame], done.stderr
        assert lines == [
            f"error: interrupted by {signame} after the command had finished; its "
            "outputs are complete"
        ]
        assert out.is_file()


@pytest.mark.parametrize("signame", SIGNALS)
def test_a_signal_while_results_or_score_write_leaves_no_output(
    tmp_path, data, run, monkeypatch, signame
):
    outs = [tmp_path / "R.md", tmp_path / "r.json", tmp_path / "s.json"]
    monkeypatch.setenv(posgen.signals.HOOK_ENV, f"results-write:{signame}")
    results = invoke("results", run, "--out", outs[0], "--json", outs[1])
    monkeypatch.setenv(posgen.signals.HOOK_ENV, f"score-write:{signame}")
    predictions = run / "predictions.parquet"
    scored = invoke("score", "--data", data, "--predictions", predictions, "--json", outs[2])
    with recorded("kill", f"results+score:write:{signame}"):
        assert_clean_error(results, CODES[signame], f"interrupted by {signame}")
        assert_clean_error(scored, CODES[signame], f"interrupted by {signame}")
        assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_python_swallows_still_ends_the_command_with_its_code():
    """Raised inside ``__del__``, an exception is printed and dropped by Python; the signal
    is remembered and raised at the next check point."""

    class Dies:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)

    previous = posgen.signals.install()
    try:
        holder = Dies()
        del holder  # the handler raises inside __del__: Python ignores that exception
        with pytest.raises(Interrupted) as caught:
            posgen.signals.check()
    finally:
        posgen.signals.restore(previous)
    with recorded("kill", "swallowed-in-__del__"):
        assert caught.value.exit_code == 143


def test_a_keyboard_interrupt_from_inside_a_command_is_exit_130(run, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("posgen.cli.results.load_run", interrupt)
    result = invoke("results", run, "--out", tmp_path / "R.md")
    with recorded("kill", "KeyboardInterrupt-in-command"):
        assert_clean_error(result, 130, "interrupted by SIGINT")
        assert not (tmp_path / "R.md").exists()


def test_the_training_loop_sees_a_signal_between_steps(tmp_path, data, monkeypatch):
    """What a checkpoint-on-SIGTERM builds on: Interrupted at a step boundary, after the
    step the signal arrived in has finished."""
    from posgen.train.job import train_runs

    steps = []
    config = preset(
        "cpu", layers=1, hidden=16, heads=2, intermediate=32, batch_size=16, epochs=1, max_steps=3
    )
    previous = posgen.signals.install()
    real_step = torch.optim.AdamW.step

    def step_then_signal(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the first step
        result = real_step(self, *args, **kwargs)
        steps.append("step")
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_signal)
    try:
        with pytest.raises(Interrupted):
            train_runs(data, "recursive", ["rope"], config, 0, [tmp_path / "r"], "cpu")
    finally:
        posgen.signals.restore(previous)
    assert steps == ["step"]  # the step finished; no second one started


# --- 2. one pinned read: a run scores on the data it trained on ---------------------------


def test_a_dataset_replaced_during_training_does_not_change_what_the_run_scores_on(
    tmp_path, data, monkeypatch
):
    ds = fresh_data(tmp_path, data)
    original = tmp_path / "original"
    shutil.copytree(ds, original)
    out = tmp_path / "run"

    def replace_once(name):
        if name == "step" and not (tmp_path / "replaced").exists():
            (tmp_path / "replaced").touch()
            made = invoke(
                "generate",
                "--task",
                "recursive",
                "--train-size",
                "48",
                "--val-size",
                "8",
                "--test-size",
                "8",
                "--seed",
                "1",
                "--out",
                ds,
                "--overwrite",
                "-q",
            )
            assert made.exit_code == 0, made.output

    monkeypatch.setattr(posgen.signals, "point", replace_once)
    result = invoke(*train_args(ds, out))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    scores = json.loads((out / "scores.json").read_text())
    rescored = invoke(
        "score", "--data", original, "--predictions", out / "predictions.parquet", "--json", "-"
    )
    new_id = json.loads((ds / "posgen.json").read_text())["configs"]["recursive"]["spec_id"]
    read = {
        file["path"]: file["sha256"]
        for split in json.loads((original / "posgen.json").read_text())["configs"]["recursive"][
            "splits"
        ].values()
        for file in split["files"]
    }
    files = json.loads((out / "results.json").read_text())["data"]["files"]
    with recorded("race", "dataset replaced mid-run"):
        assert (tmp_path / "replaced").exists()
        assert new_id != config["spec_id"]
        assert scores["spec_id"] == config["spec_id"]
        assert rescored.stdout == (out / "scores.json").read_text()
        assert files == read


def test_results_refuses_a_run_whose_scores_are_of_other_data(tmp_path, run):
    bad = copy_run(run, tmp_path / "r")
    scores = json.loads((bad / "scores.json").read_text())
    scores["spec_id"] = "0123abcd"
    (bad / "scores.json").write_text(json.dumps(scores))
    result = invoke("results", bad, "--out", tmp_path / "R.md")
    with recorded("damage", "run:scores of other data"):
        assert_clean_error(result, 1, str(bad / "scores.json"), "spec_id")
        assert not (tmp_path / "R.md").exists()


# --- 3. damaged training data is refused before training ---------------------------------


def _flip_bytes(path: Path, count: int) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(count):
        raw[len(raw) // 3 + i] ^= 0xFF
    path.write_bytes(bytes(raw))


def _shard(ds: Path, split: str) -> Path:
    return next((ds / "data" / "recursive").glob(f"{split}-*"))


def _oov(ds: Path) -> None:
    def change(tokens):
        tokens[0, -1] = 200  # outside 0..16, manifest rewritten to match
        return tokens

    rewrite_rows(ds, change, first_only=True)


DAMAGE = {
    "16 bytes flipped in train": (lambda ds: _flip_bytes(_shard(ds, "train"), 16), "sha256"),
    "200 bytes flipped in train": (lambda ds: _flip_bytes(_shard(ds, "train"), 200), "sha256"),
    "train truncated": (
        lambda ds: _shard(ds, "train").write_bytes(_shard(ds, "train").read_bytes()[:100]),
        "truncated",
    ),
    "train longer": (
        lambda ds: _shard(ds, "train").write_bytes(_shard(ds, "train").read_bytes() + b"x"),
        "longer",
    ),
    "validation missing": (lambda ds: _shard(ds, "validation").unlink(), "missing"),
    "test missing": (lambda ds: _shard(ds, "test").unlink(), "missing"),
    "train and test swapped": (
        lambda ds: _swap(_shard(ds, "train"), _shard(ds, "test")),
        "posgen.json",
    ),
    "token outside the vocabulary, manifest matching": (_oov, "outside the vocabulary"),
}


def _swap(a: Path, b: Path) -> None:
    raw = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(raw)


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_data_is_refused_before_training_naming_the_file(tmp_path, data, case):
    ds = fresh_data(tmp_path, data)
    damage, words = DAMAGE[case]
    damage(ds)
    before = snapshot(ds)
    out = tmp_path / "run"
    result = invoke(*train_args(ds, out))
    with recorded("damage", f"train:{case}"):
        assert_clean_error(result, 1, str(ds), words)
        assert not out.exists()
        assert snapshot(ds) == before


@pytest.mark.parametrize("case", ["16 bytes flipped in train", "test missing"])
def test_score_refuses_damaged_reference_data(tmp_path, data, run, case):
    ds = fresh_data(tmp_path, data)
    if case == "16 bytes flipped in train":
        _flip_bytes(_shard(ds, "test"), 16)
    else:
        _shard(ds, "test").unlink()
    result = invoke("score", "--data", ds, "--predictions", run / "predictions.parquet")
    with recorded("damage", f"score:{case}"):
        assert_clean_error(result, 1, str(ds / "data" / "recursive"))


# --- 4. results: duplicates, unfinished build folders, links -----------------------------


def test_copies_of_one_run_are_refused_never_averaged(tmp_path, run):
    runs = tmp_path / "runs"
    for name in ("a", "b", "c"):
        copy_run(run, runs / name)
    result = invoke("results", runs, "--out", tmp_path / "R.md")
    with recorded("target", "results:three copies"):
        assert_clean_error(result, 2, str(runs / "a"), str(runs / "b"), "same run")
        assert not (tmp_path / "R.md").exists()


def test_a_killed_runs_build_folder_is_named_and_not_counted(tmp_path, run):
    runs = tmp_path / "runs"
    copy_run(run, runs / "r0")
    build = copy_run(run, runs / f".r1.{TMP_TAG}-1a2b3c4d")
    out, js = tmp_path / "R.md", tmp_path / "r.json"
    result = invoke("results", runs, "--out", out, "--json", js)
    cell = json.loads(js.read_text())["ds"]["tasks"]["recursive"]["rope"]
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    with recorded("target", "results:build folder of a killed run"):
        assert result.exit_code == 0, result.output
        assert cell["n"] == 1
        assert len(notes) == 1, notes
        assert str(build) in notes[0]
        assert error_lines(result.output) == []


def test_a_build_folder_named_directly_is_refused(tmp_path, run):
    build = copy_run(run, tmp_path / f".r1.{TMP_TAG}-1a2b3c4d")
    result = invoke("results", build, "--out", tmp_path / "R.md")
    with recorded("target", "results:build folder given"):
        assert_clean_error(result, 2, str(build), "killed")


def test_a_folder_with_only_some_run_files_is_named_and_skipped(tmp_path, run):
    runs = tmp_path / "runs"
    copy_run(run, runs / "r0")
    half = copy_run(run, runs / "half")
    (half / "scores.json").unlink()
    (half / "config.json").write_text(
        json.dumps({**json.loads((half / "config.json").read_text()), "seed": 9})
    )
    result = invoke("results", runs, "--out", tmp_path / "R.md")
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    with recorded("target", "results:unfinished folder"):
        assert result.exit_code == 0, result.output
        assert len(notes) == 1, notes
        assert "scores.json" in notes[0]


@pytest.mark.parametrize("layout", ["link only", "link and folder", "link loop"])
def test_run_folders_behind_links_count_once(tmp_path, run, layout):
    runs = tmp_path / "runs"
    runs.mkdir()
    real = copy_run(run, tmp_path / "elsewhere" / "r0")
    (runs / "linked").symlink_to(real, target_is_directory=True)
    if layout == "link and folder":
        (runs / "r0").symlink_to(runs / "linked")
        (tmp_path / "elsewhere" / "up").symlink_to(runs, target_is_directory=True)
    if layout == "link loop":
        (real.parent / "loop").symlink_to(real.parent, target_is_directory=True)
    js = tmp_path / "r.json"
    out = tmp_path / "R.md"
    result = invoke("results", runs, tmp_path / "elsewhere", "--out", out, "--json", js)
    with recorded("target", f"results:{layout}"):
        assert result.exit_code == 0, result.output
        assert json.loads(js.read_text())["ds"]["tasks"]["recursive"]["rope"]["n"] == 1


# --- 5. bounded memory and time ----------------------------------------------------------


def _config_bomb(folder: Path) -> None:
    with open(folder / "config.json", "wb") as handle:
        handle.write(b"[" + b"[]," * 3_000_000 + b"[]]")


def _metrics_bomb(folder: Path) -> None:
    with open(folder / "metrics.jsonl", "ab") as handle:
        handle.write(b"x" * 20_000_000)


def _scores_bomb(folder: Path) -> None:
    with open(folder / "scores.json", "wb") as handle:
        handle.seek(300 * 2**20)
        handle.write(b"}")


BOMBS = {
    "config.json of 9 MB": (_config_bomb, "config.json", "larger than"),
    "metrics.jsonl last line of 20 MB": (_metrics_bomb, "metrics.jsonl", "longer than"),
    "scores.json of 300 MB (sparse)": (_scores_bomb, "scores.json", "larger than"),
}


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_oversized_run_files_are_refused_unread(tmp_path, run, case):
    damage, name, words = BOMBS[case]
    bad = copy_run(run, tmp_path / "r")
    damage(bad)
    tracemalloc.start()
    result = invoke("results", bad, "--out", tmp_path / "R.md")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    with recorded("bomb", f"results:{case}"):
        assert_clean_error(result, 1, str(bad / name), words)
        assert peak < 8 * 2**20


MODEL_BOMBS = {
    "480 GB model": [
        "--layers",
        "64",
        "--hidden",
        "8192",
        "--heads",
        "64",
        "--intermediate",
        "65536",
    ],
    "wide model": ["--hidden", "8192", "--heads", "64"],
    "learned table of 10^11 randomized positions": [
        "--pe",
        "learned",
        "--randomized-positions",
        "100000000000",
    ],
    "wide feed-forward": ["--intermediate", "65536", "--hidden", "4096", "--heads", "32"],
    "deep model": [
        "--layers",
        "64",
        "--hidden",
        "2048",
        "--heads",
        "16",
        "--intermediate",
        "8192",
    ],
}
AVAILABLE = 2 * 2**30
"""The memory the refusal tests pretend is available (the same on every machine)."""


def no_torch(imported: list[int]):
    """A ``require_extra`` that records the call and stops the command before any training."""

    def stop() -> None:
        imported.append(1)
        raise RuntimeError("the run got as far as importing torch")

    return stop


@pytest.mark.parametrize("case", sorted(MODEL_BOMBS))
def test_a_run_that_cannot_fit_in_memory_is_refused_up_front(tmp_path, data, case, monkeypatch):
    monkeypatch.setattr("posgen.cli.train.available_bytes", lambda: AVAILABLE)
    imported: list[int] = []
    monkeypatch.setattr("posgen.cli.train.require_extra", no_torch(imported))
    out = tmp_path / "run"
    result = invoke(*train_args(data, out), *MODEL_BOMBS[case])
    with recorded("bomb", f"train:{case}"):
        assert_clean_error(result, 2, "memory", "--force")
        assert imported == []
        assert not out.exists()


def test_memory_that_runs_out_anyway_is_one_line(tmp_path, data, monkeypatch):
    def exhausted(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")

    monkeypatch.setattr("posgen.train.trainer.train", exhausted)
    out = tmp_path / "run"
    result = invoke(*train_args(data, out), "--force")
    with recorded("resources", "train out of memory past --force"):
        assert_clean_error(result, 1, "out of memory", "estimate")
        assert not out.exists()


def test_memory_that_runs_out_after_a_checkpoint_says_the_checkpoint_was_kept(
    tmp_path, data, monkeypatch
):
    def exhausted(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")

    monkeypatch.setattr("posgen.train.trainer.train", exhausted)
    monkeypatch.setattr("posgen.train.job.read_progress", lambda folder: {"step": 1})
    out = tmp_path / "run"
    result = invoke(*train_args(data, out), "--force")
    line = assert_clean_error(result, 1, "out of memory", "checkpoint kept in", "or remove it")
    assert "no partial run folder" not in line
    assert not out.exists()


def test_train_without_config_on_a_folder_of_several_names_them_before_importing_torch(
    tmp_path, monkeypatch
):
    imported: list[int] = []
    monkeypatch.setattr("posgen.cli.train.require_extra", no_torch(imported))
    several = tmp_path / "ds"
    bench = default_benchmark(("cot", "recursive"), train_size=8, val_size=2, test_size=2)
    write_dataset(bench, several)
    result = invoke(*train_args(several, tmp_path / "run"))
    assert_clean_error(result, 2, "has configs cot, recursive: pick one with --config")
    assert imported == []
    assert not (tmp_path / "run").exists()


def test_force_trains_past_the_estimate(tmp_path, data, monkeypatch):
    monkeypatch.setattr("posgen.cli.train.available_bytes", lambda: 1)
    refused = invoke(*train_args(data, tmp_path / "a"))
    forced = invoke(*train_args(data, tmp_path / "b", "--force"))
    assert_clean_error(refused, 2, "--force")
    assert forced.exit_code == 0, forced.output


def test_the_estimate_names_its_parts_and_grows_with_the_batch():
    spec = default_benchmark(("recursive",)).configs["recursive"]
    small = estimate_run(preset("cpu"), spec)
    large = estimate_run(preset("cpu", batch_size=4096), spec)
    assert large.activations > 4 * small.activations
    assert "parameters" in refusal(large, available=1)


def test_the_estimate_counts_the_parameters_the_run_built(run):
    from posgen.train.config import parameter_count

    config = json.loads((run / "config.json").read_text())
    train = preset("cpu", **{k: v for k, v in config["train"].items() if k != "seeds"})
    assert parameter_count(train, config["spec"]["modulus"] + 1) == config["model"]["parameters"]


def test_the_train_split_is_held_at_its_stored_width(data):
    assert RunData.load(data, "recursive").train.tokens.dtype == np.uint8


def test_a_real_run_stays_within_its_memory_estimate(tmp_path, data):
    out = tmp_path / "run"
    # A child's peak RSS counts the image it was forked from (the kernel keeps the pre-exec
    # high-water mark): forked from this test process, it would include the whole suite's
    # memory. A small trampoline forks the run and reports the run's own peak.
    trampoline = (
        "import json, os, sys\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.execv(sys.executable, [sys.executable, '-m', 'posgen', *sys.argv[1:]])\n"
        "_, status, usage = os.wait4(pid, 0)\n"
        "print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss]))\n"
    )
    command = [sys.executable, "-c", trampoline, *map(str, train_args(data, out))]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    code, peak_kib = json.loads(done.stdout.strip().splitlines()[-1])
    from posgen.cli.train import memory_estimate

    config = json.loads((out / "config.json").read_text())
    train = preset("cpu", **{k: v for k, v in config["train"].items() if k != "seeds"})
    estimate = memory_estimate(data, "recursive", train)[-1].total
    with recorded("resources", "train peak within estimate"):
        assert code == 0, done.stderr
        assert peak_kib * 1024 <= estimate


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--threads", "1000000000"], ["--threads"]),
        (["--threads", "0"], ["--threads"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--eval-batch-size", "100000"], ["--eval-batch-size"]),
        (["--max-steps", "0"], ["--max-steps"]),
        (["--seed", "-1"], ["--seed"]),
        (["--seed", str(2**64)], ["--seed"]),
        (["--hidden", "30"], ["--hidden/--heads", "even head dimension"]),
        (["--hidden", "48", "--heads", "5"], ["--hidden/--heads"]),
    ],
)
def test_bad_flags_name_the_flag_as_spelled_before_any_work(
    tmp_path, data, monkeypatch, flags, names
):
    imported: list[int] = []
    monkeypatch.setattr("posgen.cli.train.require_extra", no_torch(imported))
    result = invoke(*train_args(data, tmp_path / "run"), *flags)
    with recorded("bad_input", f"train:{' '.join(flags)}"):
        line = assert_clean_error(result, 2, *names)
        assert "_" not in line.split(":")[1]  # the flag as spelled, not its field's name
        assert imported == []
        assert list(tmp_path.iterdir()) == []


# --- 6. damaged run files: one line naming the run and the field -------------------------


def _edit_json(name: str, change):
    def damage(folder: Path) -> None:
        body = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps(change(body)))

    return damage


def _text(name: str, text: str | bytes):
    def damage(folder: Path) -> None:
        raw = text if isinstance(text, bytes) else text.encode()
        (folder / name).write_bytes(raw)

    return damage


def _short_curve(body):
    for key in ("correct", "tokens", "accuracy", "position"):
        body["curve"][key] = body["curve"][key][:-3]
    return body


def _huge_counts(body):
    body["id"]["correct"] = body["id"]["tokens"] = 10**400
    return body


def _with(path: tuple[str, ...], value):
    def change(body):
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return body

    return change


def _drop(key: str):
    def change(body):
        body.pop(key)
        return body

    return change


DAMAGED_RUNS = {
    "config.json a list": (_text("config.json", "[1, 2]"), "config.json", "JSON object"),
    "config.json {}": (_text("config.json", "{}"), "config.json", "Field required"),
    "config.json 100k deep": (
        _text("config.json", '{"seed": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        "config.json",
        "JSON",
    ),
    "config.json not UTF-8": (_text("config.json", b'{"pe": "\xff"}'), "config.json", "JSON"),
    "config.json seed a string": (
        _edit_json("config.json", _with(("seed",), "x")),
        "config.json",
        "seed",
    ),
    "config.json seed missing": (_edit_json("config.json", _drop("seed")), "config.json", "seed"),
    "config.json extra key": (
        _edit_json("config.json", _with(("hacked",), 1)),
        "config.json",
        "hacked",
    ),
    "config.json NaN accuracy": (
        _edit_json("config.json", _with(("best_val_id_accuracy",), float("nan"))),
        "config.json",
        "JSON",
    ),
    "config.json Infinity in rope": (
        _edit_json("config.json", _with(("rope_parameters", "train", "rope_theta"), float("inf"))),
        "config.json",
        "JSON",
    ),
    "config.json 1e400 in rope": (
        _text("config.json", '{"rope_parameters": {"train": {"rope_theta": 1e400}}}'),
        "config.json",
        "rope_parameters.train.rope_theta",
    ),
    "config.json pe not its encoding's label": (
        _edit_json("config.json", _with(("pe",), "alibi")),
        "config.json",
        "pe",
    ),
    "results.json NaN accuracy": (
        _edit_json("results.json", _with(("id_accuracy",), float("nan"))),
        "results.json",
        "JSON",
    ),
    "results.json id_accuracy not its scores": (
        _edit_json("results.json", _with(("id_accuracy",), 0.123)),
        "results.json",
        "id_accuracy",
    ),
    "results.json seed of another run": (
        _edit_json("results.json", _with(("seed",), 77)),
        "results.json",
        "seed",
    ),
    "results.json a list": (_text("results.json", "[]"), "results.json", "JSON object"),
    "config.json a FIFO nobody writes": (
        lambda f: ((f / "config.json").unlink(), os.mkfifo(f / "config.json")),
        "config.json",
        "not a regular file",
    ),
    "scores.json a link to /dev/zero": (
        lambda f: ((f / "scores.json").unlink(), (f / "scores.json").symlink_to("/dev/zero")),
        "scores.json",
        "not a regular file",
    ),
    "metrics.jsonl a FIFO nobody writes": (
        lambda f: ((f / "metrics.jsonl").unlink(), os.mkfifo(f / "metrics.jsonl")),
        "metrics.jsonl",
        "not a regular file",
    ),
    "config.json train batch 0": (
        _edit_json("config.json", _with(("train", "batch_size"), 0)),
        "config.json",
        "train.batch_size",
    ),
    "config.json spec_id not its spec": (
        _edit_json("config.json", _with(("spec_id",), "0123abcd")),
        "config.json",
        "spec_id",
    ),
    "config.json is a folder": (
        lambda f: ((f / "config.json").unlink(), (f / "config.json").mkdir()),
        "config.json",
        "folder",
    ),
    "scores.json short curve": (_edit_json("scores.json", _short_curve), "scores.json", "curve"),
    "scores.json counts of 10^400": (
        _edit_json("scores.json", _huge_counts),
        "scores.json",
        "id",
    ),
    "scores.json NaN accuracy": (
        _edit_json("scores.json", _with(("curve", "accuracy", 0), float("nan"))),
        "scores.json",
        "JSON",
    ),
    "scores.json accuracy not its ratio": (
        _edit_json("scores.json", _with(("id", "accuracy"), 0.999)),
        "scores.json",
        "id.accuracy",
    ),
    "scores.json counts not the curve": (
        _edit_json("scores.json", _with(("ood", "correct"), 0)),
        "scores.json",
        "ood",
    ),
    "scores.json empty": (_text("scores.json", ""), "scores.json", "JSON"),
    "metrics.jsonl last line garbage": (
        _text("metrics.jsonl", '{"epoch": 1}\n}{garbage\n'),
        "metrics.jsonl",
        "last line",
    ),
    "metrics.jsonl seconds NaN": (
        _text("metrics.jsonl", '{"epoch": 1, "seconds": NaN}\n'),
        "metrics.jsonl",
        "JSON",
    ),
    "metrics.jsonl negative seconds": (
        _text(
            "metrics.jsonl",
            json.dumps(
                {
                    "epoch": 1,
                    "step": 2,
                    "train_loss": 1.0,
                    "lr": 0.1,
                    "seconds": -5,
                    "train_seconds": 1,
                }
            )
            + "\n",
        ),
        "metrics.jsonl",
        "seconds",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_RUNS))
def test_a_damaged_run_file_is_one_line_naming_the_run_and_the_field(tmp_path, run, case):
    damage, name, field = DAMAGED_RUNS[case]
    bad = copy_run(run, tmp_path / "runs" / "bad")
    damage(bad)
    out, js = tmp_path / "R.md", tmp_path / "r.json"
    result = invoke("results", tmp_path / "runs", "--out", out, "--json", js)
    with recorded("damage", f"run:{case}"):
        assert_clean_error(result, 1, str(bad / name), field)
        assert not out.exists()
        assert not js.exists()


# --- 7. no output over an input, none into a dataset -------------------------------------


def _score(data, run, tmp_path, *outputs):
    return ["score", "--data", data, "--predictions", run / "predictions.parquet", *outputs]


OVER_INPUTS = {
    "score --json onto --predictions": (
        lambda d, r, t: _score(d, r, t, "--json", r / "predictions.parquet"),
        "--json",
    ),
    "score --json onto --predictions through a link": (
        lambda d, r, t: _score(d, r, t, "--json", t / "link.parquet"),
        "--json",
    ),
    "score --json and --plot one file": (
        lambda d, r, t: _score(d, r, t, "--json", t / "x.png", "--plot", t / "x.png"),
        "--plot",
    ),
    "score --json into the dataset": (
        lambda d, r, t: _score(d, r, t, "--json", d / "report.json"),
        "dataset",
    ),
    "results --out onto a run's scores.json": (
        lambda d, r, t: ["results", r, "--out", r / "scores.json"],
        "scores.json",
    ),
    "results --json onto a run's config.json": (
        lambda d, r, t: ["results", r, "--out", t / "R.md", "--json", r / "config.json"],
        "config.json",
    ),
    "results --out X --json X": (
        lambda d, r, t: ["results", r, "--out", t / "X", "--json", t / "X"],
        "same file",
    ),
    "results --plot into the dataset": (
        lambda d, r, t: ["results", r, "--out", t / "R.md", "--plot", d / "data" / "c.png"],
        "dataset",
    ),
    "train --out inside the dataset": (
        lambda d, r, t: train_args(d, d / "data" / "recursive" / "run"),
        "dataset",
    ),
    "train --out inside another dataset": (
        lambda d, r, t: train_args(d, t / "other" / "sub" / "run"),
        "dataset",
    ),
}


@pytest.mark.parametrize("case", sorted(OVER_INPUTS))
def test_no_output_is_written_over_an_input_or_into_a_dataset(tmp_path, data, run, case):
    ds = fresh_data(tmp_path, data)
    shutil.copytree(data, tmp_path / "other")
    runs = copy_run(run, tmp_path / "r0")
    (tmp_path / "link.parquet").symlink_to(runs / "predictions.parquet")
    make, words = OVER_INPUTS[case]
    before = snapshot(tmp_path)
    result = invoke(*make(ds, runs, tmp_path))
    with recorded("target", case):
        assert_clean_error(result, 2, words)
        assert snapshot(tmp_path) == before


# --- 8. errors early and right -----------------------------------------------------------


def test_out_under_a_file_is_refused_before_training(tmp_path, data, monkeypatch):
    (tmp_path / "afile").write_text("mine")
    imported: list[int] = []
    monkeypatch.setattr("posgen.cli.train.require_extra", no_torch(imported))
    result = invoke(*train_args(data, tmp_path / "afile" / "run"))
    with recorded("bad_input", "train --out under a file"):
        assert_clean_error(result, 2, "afile", "not a folder")
        assert imported == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_out_under_a_read_only_folder_is_refused_before_training(tmp_path, data, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    imported: list[int] = []
    monkeypatch.setattr("posgen.cli.train.require_extra", no_torch(imported))
    try:
        result = invoke(*train_args(data, locked / "run"))
    finally:
        locked.chmod(0o755)
    with recorded("bad_input", "train --out under a read-only folder"):
        assert_clean_error(result, 2, str(locked), "not writable")
        assert imported == []


@pytest.mark.parametrize("existing", ["folder", "file", "dangling link"])
def test_an_existing_out_is_refused_whatever_it_is(tmp_path, data, existing):
    out = tmp_path / "run"
    if existing == "folder":
        out.mkdir()
    elif existing == "file":
        out.write_text("mine")
    else:
        out.symlink_to(tmp_path / "nowhere")
    result = invoke(*train_args(data, out))
    with recorded("bad_input", f"train --out an existing {existing}"):
        assert_clean_error(result, 2, "--out", str(out))


def test_a_folder_appearing_at_out_during_the_run_is_kept_and_named(tmp_path, data, monkeypatch):
    out = tmp_path / "run"

    def squat(name):
        if name == "step":
            out.mkdir(exist_ok=True)
            (out / "theirs.txt").write_text("someone else's")

    monkeypatch.setattr(posgen.signals, "point", squat)
    result = invoke(*train_args(data, out))
    with recorded("target", "train --out appearing mid-run"):
        assert_clean_error(result, 1, "--out", str(out), "appeared")
        assert "--overwrite" not in result.output
        assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]


def test_a_config_the_data_lacks_is_named(tmp_path, data):
    result = invoke(*train_args(data, tmp_path / "run"), "--config", "cot")
    assert_clean_error(result, 2, "--config", "no config 'cot'")


# --- 9. determinism ----------------------------------------------------------------------


@pytest.mark.parametrize("threads", ["1", "2"])
def test_runs_with_one_or_two_threads_are_byte_identical(tmp_path, data, threads):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        result = invoke(*train_args(data, out), "--threads", threads)
        assert result.exit_code == 0, result.output
    for name in ("predictions.parquet", "scores.json"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
