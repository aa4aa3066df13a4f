"""Hostile use of ``posgen train``, ``results`` and ``score`` (issues 21, 27): each ends in one
``error:`` line with its exit status (or a correct result), and no other file changes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path
from unittest.mock import Mock

import pytest

torch = pytest.importorskip("torch")

import posgen.generator  # noqa: E402
import posgen.signals  # noqa: E402
import posgen.tasks  # noqa: E402
from posgen import write_dataset  # noqa: E402
from posgen.cli.train import memory_estimate  # noqa: E402
from posgen.errors import UsageError  # noqa: E402
from posgen.signals import HOOK_ENV, Interrupted  # noqa: E402
from posgen.spec import default_benchmark  # noqa: E402
from posgen.store.dataset import Dataset  # noqa: E402
from posgen.store.manifest import Manifest  # noqa: E402
from posgen.store.safety import TMP_TAG  # noqa: E402
from posgen.train import PREDICTIONS  # noqa: E402
from posgen.train import RESULTS as RESULTS_JSON  # noqa: E402
from posgen.train.config import available_bytes, preset  # noqa: E402
from posgen.train.job import train_runs  # noqa: E402
from posgen.train.run_record import read_run  # noqa: E402
from posgen.train.trainer import RunData  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--layers=1", "--hidden=16", "--heads=2", "--intermediate=32", "--batch-size=16"]
TINY += ["--eval-batch-size=8", "--epochs=1", "--max-steps=2"]
CODES = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}
BUILD = f".r1.{TMP_TAG}-1a2b3c4d"  # the build folder of a killed run


@pytest.fixture(autouse=True)
def _memory_unknown(monkeypatch):
    """The machine's free memory never decides a test (refusal tests set it)."""
    monkeypatch.setattr("posgen.cli.train.available_bytes", lambda: None)


def train_args(data: Path, out: Path, *extra: object, quiet: str = "-q") -> list[object]:
    """``posgen train`` of a tiny rope model for two steps (``quiet=""``: with its progress bar)."""
    args = ["train", "--data", data, "--out", out, "--pe", "rope", "--seed", "0", *TINY, *extra]
    return [*args, quiet] if quiet else args


def python(*argv: object, cwd: Path, text: bool = True, **env: str):
    """``python *argv`` in a process of its own (posgen importable, ``env`` set), finished."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    command = [sys.executable, *map(str, argv)]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=text)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train-hostile") / "ds"
    write_dataset(default_benchmark(("recursive",), train_size=48, val_size=8, test_size=8), root)
    return root


@pytest.fixture(scope="module")
def run(cli, data) -> Path:
    """One finished run folder (never changed by the tests: they copy it)."""
    out = data.parent / "runs" / "r0"
    result = cli(*train_args(data, out))
    assert result.exit_code == 0, result.output
    return out


# --- 1. signals: one line and 128 + signal at every moment --------------------------------
# One handler takes all three signals: each point meets one of them in turn (``write`` two).
# ``import`` is the deferred block around ``import torch``: the signal waits for its end.
TRAIN_KILLS = [("cli", "SIGINT"), ("import", "SIGTERM"), ("load", "SIGHUP"), ("step", "SIGINT")]
TRAIN_KILLS += [("validation", "SIGTERM"), ("write", "SIGHUP"), ("write", "SIGTERM")]


@pytest.mark.parametrize(("point", "signame"), TRAIN_KILLS)
def test_a_signal_at_any_moment_of_a_run_is_one_line_and_its_exit_code(
    assert_clean_error, cli, recorded, tree, tmp_path, data, monkeypatch, point, signame
):
    """A progress bar (drawn past ``load``) is closed before the line, which ends stderr."""
    out = tmp_path / "run"
    before = tree(data)
    monkeypatch.setenv(HOOK_ENV, f"{point}:{signame}")
    result = cli(*train_args(data, out, quiet=""))
    left = sorted(p.name for p in tmp_path.iterdir())
    resume = tmp_path / ".run.posgen-resume"  # the checkpoint a rerun resumes from (issue 19)
    with recorded("kill", f"train:{point}:{signame}"):
        line = assert_clean_error(result, CODES[signame], f"interrupted by {signame}")
        assert ("step" in result.stderr) == (point not in ("cli", "import", "load"))  # a bar
        assert re.split(r"[\r\n]", result.stderr.rstrip("\n"))[-1] == line
        assert not os.path.lexists(out)
        assert left in ([], [resume.name])
        assert (str(resume) in line) == (left == [resume.name])
        assert tree(data) == before


OTHER_RUNS = {  # a rerun's flags (``renamed``: of a copy of the data) -> what the line says
    "another seed": (["--seed=1"], "is of another run (the data folder's name,"),
    # killed between the checkpoint's rename and progress.json's: the folder was deleted
    "another seed, no progress.json": (["--seed=1"], "is of another run (the data folder's"),
    "the data folder renamed": ([], "is of another run (the data folder's name,"),
    "yarn (trains as rope does)": (["--pe", "yarn"], "is of a run with other flags (it trains"),
    "linear (trains as rope does)": (["--pe", "linear"], "is of a run with other flags (it"),
}


@pytest.mark.parametrize("case", OTHER_RUNS)
def test_a_checkpoint_of_another_run_is_refused_saying_what_names_a_run_and_kept(
    assert_clean_error, cli, tmp_path, data, monkeypatch, case
):
    flags, words = OTHER_RUNS[case]
    out, checkpoint = tmp_path / "run", tmp_path / ".run.posgen-resume" / "checkpoint.pt"
    monkeypatch.setenv(HOOK_ENV, "step:1:SIGTERM")
    assert cli(*train_args(data, out)).exit_code == 143
    monkeypatch.delenv(HOOK_ENV)
    renamed = shutil.copytree(data, tmp_path / "renamed") if "renamed" in case else data
    if "progress" in case:
        (checkpoint.parent / "progress.json").unlink()
    before = checkpoint.read_bytes()
    line = assert_clean_error(cli(*train_args(renamed, out, *flags)), 2, words)
    assert "rerun with those, or remove it to start over" in line
    assert checkpoint.read_bytes() == before
    assert cli(*train_args(data, out)).exit_code == 0  # the same command resumes it


IN_A_PROCESS = [("startup", "SIGINT"), ("startup", "SIGHUP"), ("startup", "SIGTERM")]
IN_A_PROCESS += [("exit", "SIGTERM"), ("exit", "SIGINT")]


@pytest.mark.parametrize(("point", "signame"), IN_A_PROCESS)
def test_a_signal_before_the_imports_or_after_the_command_is_one_line_and_its_code(
    recorded, tmp_path, data, run, point, signame
):
    """A real ``posgen`` process: before the commands are imported, after ``results`` ended."""
    out = tmp_path / ("R.md" if point == "exit" else "run")
    args = ["results", run, "--out", out] if point == "exit" else train_args(data, out)
    done = python("-m", "posgen", *args, cwd=tmp_path, **{HOOK_ENV: f"{point}:{signame}"})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    said = " after the command had finished; its outputs are complete"
    said = said if point == "exit" else "; no partial output was left"
    with recorded("kill", f"{args[0]}:{point}:{signame}"):
        assert done.returncode == CODES[signame], done.stderr
        assert lines == [f"error: interrupted by {signame}{said}"]
        assert os.path.lexists(out) == (point == "exit")


@pytest.mark.parametrize("signame", CODES)
def test_a_signal_while_results_or_score_write_leaves_no_output(
    assert_clean_error, cli, recorded, tmp_path, data, run, monkeypatch, signame
):
    outs = [tmp_path / "R.md", tmp_path / "r.json", tmp_path / "s.json"]
    monkeypatch.setenv(HOOK_ENV, f"results-write:{signame}")
    results = cli("results", run, "--out", outs[0], "--json", outs[1])
    monkeypatch.setenv(HOOK_ENV, f"score-write:{signame}")
    predictions = run / "predictions.parquet"
    scored = cli("score", "--data", data, "--predictions", predictions, "--json", outs[2])
    with recorded("kill", f"results+score:write:{signame}"):
        assert_clean_error(results, CODES[signame], f"interrupted by {signame}")
        assert_clean_error(scored, CODES[signame], f"interrupted by {signame}")
        assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_python_swallows_still_ends_the_command_with_its_code(recorded):
    """Python prints and drops what ``__del__`` raises; the signal is raised at the next check."""

    class Dies:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)

    holder = Dies()
    del holder  # the handler raises inside __del__: Python ignores that exception
    with pytest.raises(Interrupted) as caught:
        posgen.signals.check()
    with recorded("kill", "swallowed-in-__del__"):
        assert caught.value.exit_code == 143


def test_a_keyboard_interrupt_from_inside_a_command_is_exit_130(
    assert_clean_error, cli, recorded, run, tmp_path, monkeypatch
):
    monkeypatch.setattr("posgen.cli.results.read_run", Mock(side_effect=KeyboardInterrupt))
    result = cli("results", run, "--out", tmp_path / "R.md")
    with recorded("kill", "KeyboardInterrupt-in-command"):
        assert_clean_error(result, 130, "interrupted by SIGINT")
        assert not (tmp_path / "R.md").exists()


def test_the_training_loop_sees_a_signal_between_steps(tmp_path, data, monkeypatch):
    """Interrupted at a step boundary, after the step the signal arrived in has finished."""
    size = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32, "batch_size": 16}
    steps, real_step = [], torch.optim.AdamW.step

    def step_then_signal(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the first step
        steps.append(real_step(self, *args, **kwargs))
        return steps[-1]

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_signal)
    config = preset("cpu", **size, epochs=1, max_steps=3)
    with pytest.raises(Interrupted):
        train_runs(data, "recursive", ["rope"], config, 0, [tmp_path / "r"], "cpu")
    assert len(steps) == 1  # the step finished; no second one started


def test_a_work_folder_holding_other_files_is_refused_by_the_job_and_kept(data, tmp_path):
    """The job removes its work folder when done (a sweep's, an API caller's as well)."""
    work = tmp_path / "work"
    shutil.copytree(data, work)  # not a checkpoint: a dataset
    before = sorted(p.name for p in work.iterdir())
    config = preset("cpu", layers=1, hidden=16, heads=2, intermediate=32, epochs=1, max_steps=1)
    with pytest.raises(UsageError, match=r"^job: .*work holds README\.md and \d+ more, not only"):
        train_runs(data, "recursive", ["rope"], config, 0, [tmp_path / "r"], "cpu", work=work,
                   key="k", name="job")  # fmt: skip
    assert sorted(p.name for p in work.iterdir()) == before and not (tmp_path / "r").exists()


# --- 2. one pinned read: a run scores on the data it trained on ---------------------------
def test_a_dataset_replaced_during_training_does_not_change_what_the_run_scores_on(
    cli, recorded, tmp_path, data, monkeypatch
):
    ds = shutil.copytree(data, tmp_path / "ds")
    original = shutil.copytree(ds, tmp_path / "original")
    out = tmp_path / "run"

    def replace_once(name, number=None):
        if name == "step" and not (tmp_path / "replaced").exists():
            (tmp_path / "replaced").touch()
            sizes = ["--train-size=48", "--val-size=8", "--test-size=8", "--seed=1"]
            made = cli("generate", "--task=recursive", *sizes, "--out", ds, "--overwrite", "-q")
            assert made.exit_code == 0, made.output

    monkeypatch.setattr(posgen.signals, "point", replace_once)
    result = cli(*train_args(ds, out))
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    predictions = out / "predictions.parquet"
    rescored = cli("score", "--data", original, "--predictions", predictions, "--json", "-")
    new_id = json.loads((ds / "posgen.json").read_text())["configs"]["recursive"]["spec_id"]
    splits = json.loads((original / "posgen.json").read_text())["configs"]["recursive"]["splits"]
    read = {file["path"]: file["sha256"] for split in splits.values() for file in split["files"]}
    with recorded("race", "dataset replaced mid-run"):
        assert (tmp_path / "replaced").exists()
        assert new_id != record["scores"]["spec_id"]
        assert json.loads(rescored.stdout) == record["scores"]
        assert record["data"]["files"] == read


# --- 3. damaged data is refused before training (and by score) ---------------------------
def _shard(ds: Path, split: str) -> Path:
    return next((ds / "data" / "recursive").glob(f"{split}-*"))


def _bytes(split: str, change):
    """A damage: the ``split`` shard's bytes replaced by ``change(them)``."""
    return lambda ds, _: _shard(ds, split).write_bytes(change(_shard(ds, split).read_bytes()))


def _flipped(count: int):
    def flip(raw: bytes) -> bytes:
        at = len(raw) // 3
        return raw[:at] + bytes(b ^ 0xFF for b in raw[at : at + count]) + raw[at + count :]

    return flip


def _swap(ds: Path, _) -> None:
    train, test = _shard(ds, "train"), _shard(ds, "test")
    raw = train.read_bytes()
    train.write_bytes(test.read_bytes())
    test.write_bytes(raw)


def _oov(tokens):
    tokens[0, -1] = 200  # outside 0..16, manifest rewritten to match
    return tokens


DAMAGE = {
    "16 bytes flipped in train": (_bytes("train", _flipped(16)), "sha256"),
    "200 bytes flipped in train": (_bytes("train", _flipped(200)), "sha256"),
    "16 bytes flipped in test": (_bytes("test", _flipped(16)), "sha256"),
    "train truncated": (_bytes("train", lambda raw: raw[:100]), "truncated"),
    "train longer": (_bytes("train", lambda raw: raw + b"x"), "longer"),
    "validation missing": (lambda ds, _: _shard(ds, "validation").unlink(), "missing"),
    "test missing": (lambda ds, _: _shard(ds, "test").unlink(), "missing"),
    "train and test swapped": (_swap, "posgen.json"),
    "token outside the vocabulary, manifest matching": (
        lambda ds, rewrite_rows: rewrite_rows(ds, _oov, first_only=True), "outside the vocabulary"
    ),
}  # fmt: skip
SCORED = ["16 bytes flipped in test", "test missing"]  # damage of what score reads


@pytest.mark.parametrize(
    ("command", "case"), [*(("train", c) for c in sorted(DAMAGE)), *(("score", c) for c in SCORED)]
)
def test_damaged_data_is_refused_naming_the_file_before_any_work(
    rewrite_rows, assert_clean_error, cli, recorded, tree, tmp_path, data, run, command, case
):
    ds = shutil.copytree(data, tmp_path / "ds")
    damage, words = DAMAGE[case]
    damage(ds, rewrite_rows)
    before, out = tree(ds), tmp_path / "out"
    if command == "train":
        result = cli(*train_args(ds, out))
    else:
        result = cli("score", "--data", ds, "--predictions", run / PREDICTIONS, "--json", out)
    with recorded("damage", f"{command}:{case}"):
        assert_clean_error(result, 1, str(ds / "data" / "recursive"), words)
        assert not out.exists()
        assert tree(ds) == before


def test_a_task_whose_rule_changed_since_its_dataset_was_written_is_refused_before_training(
    assert_clean_error, cli, third_task, monkeypatch, tmp_path
):
    """Before, the run trained and wrote attention figures of the far operands where the new
    rule puts them (exit 0); ``posgen validate`` alone saw the dataset fail its window check."""
    ds, out = tmp_path / "ds", tmp_path / "out"
    sizes = ["--train-size", "48", "--val-size", "8", "--test-size", "8", "-q"]
    assert cli("generate", "--out", ds, "--task", third_task, *sizes).exit_code == 0
    caches = (posgen.generator.far_starts, posgen.generator.operand_slots)
    monkeypatch.setitem(posgen.tasks._RULES, third_task, lambda t, w: (t - w) // 4)
    try:  # as a new process reads the rule
        [cache.cache_clear() for cache in caches]
        result = cli(*train_args(ds, out))
    finally:
        [cache.cache_clear() for cache in caches]
    assert_clean_error(result, 1, "test row 0, t = 7: the stored token", f"task '{third_task}'")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


# --- 4. results: duplicates, unfinished build folders, links -----------------------------
LAYOUTS = {  # layout -> what the one note names (None: no note, the run behind links)
    "build folder of a killed run": BUILD,
    "unfinished folder": "results.json",  # the run's file a half-copied folder lacks
    "results.json without the predictions": "predictions.parquet",
    "link only": None,
    "link and folder": None,
    "link loop": None,
    "link out of the folders named": None,  # followed: it holds none of them
    "link to the file system's root": "a link to /, a folder holding",  # never walked
    "link to the parent": "a folder holding",
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_results_counts_a_run_once_and_notes_a_folder_that_is_no_finished_run(
    cli, error_lines, recorded, tmp_path, run, layout
):
    runs, elsewhere, named = tmp_path / "runs", tmp_path / "elsewhere", LAYOUTS[layout]
    if named is None:
        runs.mkdir()
        (runs / "linked").symlink_to(shutil.copytree(run, elsewhere / "r0"))
    else:
        shutil.copytree(run, runs / "r0")
    if layout == "link and folder":
        (runs / "r0").symlink_to(runs / "linked")
        (elsewhere / "up").symlink_to(runs, target_is_directory=True)
    if layout == "link loop":
        (elsewhere / "loop").symlink_to(elsewhere, target_is_directory=True)
    if named == BUILD:
        named = str(shutil.copytree(run, runs / BUILD))
    elif layout.startswith("link to"):
        (runs / "up").symlink_to("/" if "root" in layout else "..", target_is_directory=True)
    elif named is not None:
        (shutil.copytree(run, runs / "half") / named).unlink()
    js = tmp_path / "r.json"
    folders = [runs] if named or "out of" in layout else [runs, elsewhere]
    result = cli("results", *folders, "--out", tmp_path / "R.md", "--json", js)
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    with recorded("target", f"results:{layout}"):
        assert result.exit_code == 0, result.output
        cell = json.loads(js.read_text())["ds"]["tasks"]["recursive"]["rope"]
        assert (cell["n"], cell["far_n"]) == (1, 1)
        written = json.loads((run / "results.json").read_text())["probe_scores"]["id"]
        assert cell["far_id_mean"] == written["far_reliance"]  # the record as written is read
        assert [named in note for note in notes] == ([True] if named else []), notes
        assert error_lines(result.output) == []


def test_results_counts_a_run_of_another_seed_trained_into_another_runs_folder(
    cli, tmp_path, data, run
):
    outer = shutil.copytree(run, tmp_path / "runs" / "r0")
    assert cli(*train_args(data, outer / "seed1", "--seed", "1")).exit_code == 0
    assert (outer / "seed1" / PREDICTIONS).read_bytes() != (run / PREDICTIONS).read_bytes()
    js = tmp_path / "r.json"
    result = cli("results", tmp_path / "runs", "--out", tmp_path / "R.md", "--json", js)
    assert result.exit_code == 0, result.output
    assert json.loads(js.read_text())["ds"]["tasks"]["recursive"]["rope"]["seeds"] == [0, 1]


@pytest.fixture(scope="module")
def cell_mates(cli, data) -> dict[str, Path]:
    """Beside ``run``: alibi on another dataset also named ``ds``; rope on its data, 3 steps."""
    other = data.parent / "two" / "ds"
    write_dataset(default_benchmark(("recursive",), train_size=40, val_size=8, test_size=8), other)
    runs = data.parent / "runs"
    made = {
        "other-data": train_args(other, runs / "other-data", "--pe", "alibi"),
        "other-settings": train_args(data, runs / "other-settings", "--max-steps=3"),
    }
    for args in made.values():
        result = cli(*args)
        assert result.exit_code == 0, result.output
    return {name: runs / name for name in made}


# --- 5. bounded memory and time ----------------------------------------------------------
MODEL_BOMBS = {
    "480 GB model": ["--layers=64", "--hidden=8192", "--heads=64", "--intermediate=65536"],
    "wide model": ["--hidden=8192", "--heads=64"],
    "learned table of 10^11 randomized positions": ["--pe=learned",
                                                    "--randomized-positions=100000000000"],
    "wide feed-forward": ["--intermediate=65536", "--hidden=4096", "--heads=32"],
    "deep model": ["--layers=64", "--hidden=2048", "--heads=16", "--intermediate=8192"],
}  # fmt: skip
# case -> (flags, whether the estimate refuses them at 2 GiB, the summary's kind)
MEMORY = {case: (flags, True, "bomb") for case, flags in MODEL_BOMBS.items()}
for pe, table in {"rope": False, "alibi": False, "learned": True, "sinusoidal": True}.items():
    flags = [f"--pe={pe}", "--randomized-positions=100000000"]  # refused if pe has a table
    MEMORY[f"10^8 randomized positions with {pe}"] = (flags, table, "resources")


@pytest.fixture
def imported(monkeypatch) -> Mock:
    """Called when the command gets as far as importing torch (it then stops, exit 143)."""
    stop = Mock(side_effect=Interrupted(signal.SIGTERM))
    monkeypatch.setattr("posgen.cli.train.require_extra", stop)
    return stop


@pytest.mark.parametrize("case", sorted(MEMORY))
def test_a_run_that_cannot_fit_in_memory_and_only_such_a_run_is_refused_up_front(
    assert_clean_error, cli, recorded, imported, tmp_path, data, case, monkeypatch
):
    flags, refused, kind = MEMORY[case]
    monkeypatch.setattr("posgen.cli.train.available_bytes", lambda: 2 * 2**30)
    out = tmp_path / "run"
    result = cli(*train_args(data, out), *flags)
    with recorded(kind, f"train:{case}"):
        if refused:
            assert_clean_error(result, 2, "memory", "--force")
        else:  # past the estimate: stopped at the import
            assert_clean_error(result, 143)
        assert imported.call_count == (0 if refused else 1)
        assert not out.exists()


KEPT = [(None, ["estimate", "no partial run folder"])]  # progress, what the line says was kept
KEPT += [({"step": 1}, ["checkpoint kept in", "or remove it"])]


@pytest.mark.parametrize(("progress", "words"), KEPT)
def test_memory_that_runs_out_anyway_is_one_line_naming_what_was_kept(
    assert_clean_error, cli, recorded, tmp_path, data, monkeypatch, progress, words
):
    exhausted = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")
    monkeypatch.setattr("posgen.train.trainer.train", Mock(side_effect=exhausted))
    if progress is not None:
        monkeypatch.setattr("posgen.train.job.read_progress", lambda folder: progress)
    out = tmp_path / "run"
    result = cli(*train_args(data, out), "--force")
    with recorded("resources", f"train out of memory past --force ({words[0]})"):
        line = assert_clean_error(result, 1, "out of memory", *words)
        assert ("checkpoint kept" in line) == (progress is not None)
        assert not out.exists()


def test_the_estimate_grows_with_the_batch_and_bounds_a_run_of_a_non_ascii_folder_in_ascii(
    recorded, tmp_path, data
):
    """The run: of data folder ``dé`` under LC_ALL=C without UTF-8 mode, its name surrogate-
    escaped (its record failed after the whole training: "folder: Input should be a valid
    string", exit 2); recorded by name, its peak memory within the estimate."""
    from posgen.train.config import estimate_run, parameter_count, refusal

    spec = default_benchmark(("recursive",)).configs["recursive"]
    small = estimate_run(preset("cpu"), spec)
    large = estimate_run(preset("cpu", batch_size=4096), spec)
    assert large.activations > 4 * small.activations
    assert "parameters" in refusal(large, available=1)
    assert RunData.load(data, "recursive").train.tokens.dtype.name == "uint8"  # its stored width
    out = tmp_path / "run"
    shutil.copytree(data, tmp_path / "d\u00e9")
    # A child's peak RSS counts the image it was forked from (the kernel keeps the pre-exec
    # high-water mark): a small trampoline forks the run and reports the run's own peak.
    trampoline = (
        "import json, os, sys\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.execv(sys.executable, [sys.executable, '-m', 'posgen', *sys.argv[1:]])\n"
        "_, status, usage = os.wait4(pid, 0)\n"
        "print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss]))\n"
    )
    args = train_args(Path("d\u00e9"), Path("run"))
    ascii_only = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    ascii_only["OMP_NUM_THREADS"] = "1"
    done = python("-c", trampoline, *args, cwd=tmp_path, text=False, **ascii_only)
    code, peak_kib = json.loads(done.stdout.strip().splitlines()[-1])
    assert code == 0, done.stderr.decode(errors="replace")
    record = json.loads((out / "results.json").read_text())
    assert record["data"]["folder"] == "d\u00e9"
    train = preset("cpu", **{k: v for k, v in record["train"].items() if k != "seeds"})
    assert parameter_count(train, record["spec"]["modulus"] + 1) == record["model"]["parameters"]
    with recorded("resources", "train peak within estimate"):
        assert peak_kib * 1024 <= memory_estimate(Dataset.open(data), "recursive", train).total


def test_epochs_a_run_never_reaches_hold_no_row_order(cli, tmp_path, data, monkeypatch):
    """Each epoch's row order is made when the epoch starts (10,000 of them are gigabytes)."""
    made = Mock(side_effect=torch.randperm)
    monkeypatch.setattr(torch, "randperm", made)
    result = cli(*train_args(data, tmp_path / "run"), "--epochs=10000")
    assert result.exit_code == 0, result.output
    assert made.call_count == 1


GIB = 2**30
CGROUPS = {  # /proc/self/cgroup, the files under the cgroup mount, what is left (GiB)
    "v2, the process's own cgroup": ("0::/user.slice/job\n", {
        "user.slice/job/memory.max": 2 * GIB, "user.slice/job/memory.current": GIB // 2}, 1.5),
    "v2, at the mount's root": ("0::/\n", {"memory.max": GIB, "memory.current": 0}, 1.0),
    "v1, the process's own cgroup": ("4:memory:/batch/7\n0::/\n", {
        "memory/batch/7/memory.limit_in_bytes": 3 * GIB,
        "memory/batch/7/memory.usage_in_bytes": GIB}, 2.0),
    "v2 without a limit": ("0::/a\n", {"a/memory.max": "max", "a/memory.current": 5}, 16.0),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CGROUPS))
def test_the_estimate_honours_the_memory_cgroup_the_process_is_in(recorded, tmp_path, case):
    membership, files, left = CGROUPS[case]
    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal: {32 * 2**20} kB\nMemAvailable: {16 * 2**20} kB\n")
    (proc / "self" / "cgroup").write_text(membership)
    (proc / "self" / "status").write_text("VmSize: 1000 kB\n")
    for name, value in files.items():
        (cgroup / name).parent.mkdir(parents=True, exist_ok=True)
        (cgroup / name).write_text(f"{value}\n")
    with recorded("resources", f"issue 27 class 10: memory cgroup {case}"):
        assert available_bytes(proc, cgroup) == min(left * GIB, available_bytes(proc, tmp_path))


def test_the_estimate_honours_the_address_space_limit_and_refuses_a_run_past_it(
    assert_clean_error, recorded, tmp_path
):
    data = tmp_path / "big"
    write_dataset(default_benchmark(("cot",), train_size=4000, val_size=8, test_size=8), data)
    limit = 4 * GIB
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
        "from posgen.train.config import available_bytes\n"
        "print(available_bytes(), flush=True)\n"
        "from posgen.cli import main\n"
        f"main(['train', '--data', {str(data)!r}, '--pe', 'rope', '--batch-size', '65536', "
        f"'--out', {str(tmp_path / 'run')!r}])\n"
    )
    done = python("-c", code, cwd=ROOT)
    with recorded("resources", "issue 27 class 10: a run past RLIMIT_AS"):
        assert 0 < int(done.stdout) <= limit
        assert_clean_error(done, 2, "memory", "--force")
        assert not (tmp_path / "run").exists()


# --- 6. flags and outputs wrong: one line, exit 2, before any work ---------------------------
BAD_FLAGS = [  # the flags (of a train command, before the imports unless said), what the line names
    (["--threads", "1000000000"], ["--threads"]),
    (["--threads", "0"], ["--threads"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--eval-batch-size", "100000"], ["--eval-batch-size"]),
    (["--max-steps", "0"], ["--max-steps"]),
    (["--seed", "-1"], ["--seed"]),
    (["--seed", str(2**64)], ["--seed"]),
    (["--hidden", "30"], ["--hidden/--heads", "even head dimension"]),
    (["--hidden", "48", "--heads", "5"], ["--hidden/--heads"]),
    (["--lr", "0"], ["--lr: Input should be greater than 0"]),
    (["--preset", "gpu"], ["'gpu' is not one of"]),
    (["--config", "cot"], ["--config: no config 'cot' in "]),
    # checked once torch is imported
    (["--pe", "bogus"], ["unknown position encoding 'bogus'"]),
    (["--pe", "a/b"], ["--pe a/b: not a position encoding name (see --list-pe)"]),
    (["--pe-param", "factor"], ["--pe-param 'factor': use key=value"]),
    (["--pe-param", "fator=2"], ["rope has no such parameter"]),
    (["--randomized-positions", "lots"], ["--randomized-positions 'lots': use a range size or"]),
    (["--config", "x" * 500], [f"--config: no config '{'x' * 57}...' in "]),
    (["--pe-param", "x" * 500], [f"--pe-param '{'x' * 57}...': use key=value"]),
    (["--pe-param", "x" * 500 + "=2"], [f"--pe-param {'x' * 57}...: rope has no such parameter"]),
    (["--randomized-positions", "x" * 500], [f"--randomized-positions '{'x' * 57}...': use"]),
    (["--randomized-positions", "100"], ["must hold the test rows' 257 positions"]),
    (["--randomized-positions", str(2**63)], ["--randomized-positions", "64-bit"]),
    *[(["--device", "cuda"], ["--device cuda: no CUDA device is available"])]
    * (not torch.cuda.is_available()),
]


def _read_only(t: Path, _) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    (t / "parent").mkdir()
    (t / "parent").chmod(0o555)


def _of_another_user(t: Path, _) -> None:
    """As another user's leftover in /tmp: it resumed from it, or trained and failed writing it."""
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    (t / RESUME).mkdir()
    os.chown(t / RESUME, 65534, 65534)


def _beside(t: Path, second: Path) -> None:
    """Two runs of one table: ``runs/a`` (a copy of r0) and ``runs/b`` (of ``second``)."""
    shutil.copytree(t / "r0", t / "runs" / "a")
    shutil.copytree(second, t / "runs" / "b")


def _other_plugin(t: Path, _) -> None:
    """``runs/a`` (r0) and ``runs/b``: r0 as another seed of another plugin of its label."""
    _beside(t, t / "r0")
    body = json.loads((t / "runs" / "b" / RESULTS_JSON).read_text())
    body["seed"] += 1
    body["position_encoding"]["source"] = "module othermod:ROPE"
    (t / "runs" / "b" / RESULTS_JSON).write_text(json.dumps(body))


def train(data: str = "ds", out: str = "run") -> str:
    return " ".join(["train --pe rope -q", *TINY, f"--data {{t}}/{data} --out {{t}}/{out}"])


SCORE = "score --data {t}/ds --predictions {t}/r0/predictions.parquet"
RESULTS = "results {t}/r0 --out {t}/R.md"
NO_IMAGE = "is not an image format matplotlib writes"
RESUME = ".run.posgen-resume"
SEVERAL = default_benchmark(("cot", "recursive"), train_size=8, val_size=2, test_size=2)
# record key -> (setup(t, cell_mates) or None, the command, what the line names), where t is
# tmp_path: the datasets ds and other, the run r0, link.parquet (a link to r0's predictions)
BAD_INPUTS = {
    **{f"results --plot {name}": (None, f"{RESULTS} --plot {{t}}/{name}", ["--plot: ", NO_IMAGE])
       for name in ("c.xyz", "c", "c.parquet")},
    "results a run's results.json, not its folder": (None,
        "results {t}/r0/results.json --out {t}/R.md", ["{t}/r0/results.json: is a file, not a"]),
    "train --data no posgen dataset": (lambda t, _: (t / "x").mkdir(), train("x"), ["{t}/x"]),
    "train --data several configs, no --config": (lambda t, _: write_dataset(SEVERAL, t / "x"),
        train("x"), ["has configs cot, recursive: pick one with --config"]),
    "train --out under a file": (lambda t, _: (t / "parent").write_text("mine"),
        train(out="parent/run"), ["parent", "not a folder"]),
    "train --out under a read-only folder": (_read_only, train(out="parent/run"),
        ["{t}/parent", "not writable"]),
    "train --out an existing folder": (lambda t, _: (t / "run").mkdir(), train(),
        ["--out", "{t}/run"]),
    "train --out an existing file": (lambda t, _: (t / "run").write_text("mine"), train(),
        ["--out", "{t}/run"]),
    "train --out a dangling link": (lambda t, _: (t / "run").symlink_to(t / "nowhere"), train(),
        ["--out", "{t}/run"]),
    "train --out a file where the checkpoint goes": (
        lambda t, _: (t / RESUME).write_text("mine"), train(), [f"{RESUME} is a file"]),
    "train --out a link where the checkpoint goes": (
        lambda t, _: (t / RESUME).symlink_to(t / "parent"), train(), [f"{RESUME} is a link"]),
    **{f"train --out {name}, a name of posgen's own (a later run removed or moved it)": (
        None, train(out=name), [f"{{t}}/{name}: a name posgen gives its own hidden folders"])
       for name in (".run.posgen-tmp-1a2b3c4d", ".run.posgen-old-1a2b3c4d", RESUME)},
    "train --out where the checkpoint goes, another run's folder (it was removed)": (
        lambda t, _: shutil.copytree(t / "r0", t / RESUME), train(),
        [f"{RESUME} holds metrics.jsonl and 3 more, not only a checkpoint"]),
    "train --out where the checkpoint goes, a folder of the user's": (
        lambda t, _: (t / RESUME).mkdir() or (t / RESUME / "notes.txt").write_text("mine"),
        train(), [f"{RESUME} holds notes.txt, not only"]),
    "train --out where the checkpoint goes, a folder of another user": (_of_another_user,
        train(), [f"{{t}}/{RESUME}", "belongs to another user"]),
}  # fmt: skip
TARGETS = {  # more: tests/cli/test_outputs_never_land_on_inputs.py
    "score --json onto --predictions via a link": (None, SCORE + " --json {t}/link.parquet",
                                                   ["--json"]),
    "score --json and --plot one file": (None, SCORE + " --json {t}/x.png --plot {t}/x.png",
                                         ["--plot"]),
    "score --json into the dataset": (None, SCORE + " --json {t}/ds/report.json", ["dataset"]),
    "results --out onto a run's results.json": (None, "results {t}/r0 --out {t}/r0/results.json",
                                                ["results.json"]),
    "results --json onto a run's metrics.jsonl": (None, RESULTS + " --json {t}/r0/metrics.jsonl",
                                                  ["metrics.jsonl"]),
    "results --out X --json X": (None, "results {t}/r0 --out {t}/X --json {t}/X", ["same file"]),
    "results --format eee --out E --json E/x.json (written, then 'pass --overwrite')": (
        None, "results {t}/r0 --format eee --out {t}/E --json {t}/E/x.json", ["inside --out"]),
    "results --out inside a run folder": (None, "results {t}/r0 --out {t}/r0/R.md",
                                          ["run folder"]),
    "results --format eee --out inside a run folder": (
        None, "results {t}/r0 --format eee --out {t}/r0/eee", ["run folder"]),
    "results --plot into the dataset": (None, RESULTS + " --plot {t}/ds/data/c.png", ["dataset"]),
    "train --out inside the dataset": (None, train(out="ds/data/recursive/run"), ["dataset"]),
    "train --out inside another dataset": (None, train(out="other/sub/run"), ["dataset"]),
    "results:build folder given": (lambda t, _: shutil.copytree(t / "r0", t / BUILD),
        f"results {{t}}/{BUILD} --out {{t}}/R.md", [f"{{t}}/{BUILD}", "killed"]),
    "issue 27 class 10: results another dataset of the same folder name": (
        lambda t, mates: _beside(t, mates["other-data"]),
        "results {t}/runs --out {t}/R.md", ["different datasets"]),
    "issue 27 class 10: results other settings, same seed": (
        lambda t, mates: _beside(t, mates["other-settings"]),
        "results {t}/runs --out {t}/R.md", ["different settings"]),
    "results another plugin of the same label, another seed (was averaged into one cell)": (
        _other_plugin, "results {t}/runs --out {t}/R.md", ["different encodings of one label"]),
    "issue 27 class 10: results a copy": (lambda t, _: _beside(t, t / "r0"),
        "results {t}/runs --out {t}/R.md", ["are the same run"]),
}  # fmt: skip
REFUSED = {
    **{
        f"train:{' '.join(flags)}": ("bad_input", None, " ".join([train(), *flags]), names)
        for flags, names in BAD_FLAGS
    },
    **{case: ("bad_input", *value) for case, value in BAD_INPUTS.items()},
    **{case: ("target", *value) for case, value in TARGETS.items()},
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_wrong_input_or_output_is_one_line_exit_2_before_any_work_and_nothing_changes(
    assert_clean_error, cli, recorded, tree, cell_mates, request, tmp_path, data, run, case
):
    kind, setup, command, words = REFUSED[case]
    before_torch = not case.startswith(("train:--pe", "train:--randomized", "train:--device"))
    imported = request.getfixturevalue("imported") if before_torch else Mock()
    for name, source in (("ds", data), ("other", data), ("r0", run)):
        shutil.copytree(source, tmp_path / name)
    (tmp_path / "link.parquet").symlink_to(tmp_path / "r0" / PREDICTIONS)
    try:
        if setup is not None:
            setup(tmp_path, cell_mates)
        before = tree(tmp_path)
        result = cli(*command.format(t=tmp_path).split())
        after = tree(tmp_path)
    finally:
        if (tmp_path / "parent").is_dir():
            (tmp_path / "parent").chmod(0o755)
    with recorded(kind, case):
        line = assert_clean_error(result, 2, *(word.format(t=tmp_path) for word in words))
        assert result.output.strip() == line  # nothing but the error line
        assert not imported.called
        assert after == before
        if case.startswith("train:") and before_torch:  # a bad flag as spelled, not its field
            assert "_" not in line.split(":")[1]


def test_a_folder_appearing_at_out_during_the_run_is_kept_and_named(
    assert_clean_error, cli, recorded, tmp_path, data, monkeypatch
):
    out = tmp_path / "run"

    def squat(name, number=None):
        if name == "step":
            out.mkdir(exist_ok=True)
            (out / "theirs.txt").write_text("someone else's")

    monkeypatch.setattr(posgen.signals, "point", squat)
    result = cli(*train_args(data, out))
    with recorded("target", "train --out appearing mid-run"):
        assert_clean_error(result, 1, "--out", str(out), "appeared")
        assert "--overwrite" not in result.output
        assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]


def test_a_run_of_data_dot_dot_is_recorded_and_exported_under_the_dataset_name(
    cli, recorded, tmp_path, data, monkeypatch
):
    monkeypatch.chdir(shutil.copytree(data, tmp_path / "ds") / "data")
    assert cli(*train_args(Path(".."), tmp_path / "r0")).exit_code == 0
    assert read_run(tmp_path / "r0").data.folder == str(tmp_path / "ds")
    mine = tmp_path / "w" / "recursive" / "rope.json"  # where a `..` in the path would land
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    result = cli("results", tmp_path / "r0", "--format", "eee", "--out", tmp_path / "w" / "E")
    with recorded("target", "results --format eee of a run trained with --data .."):
        assert result.exit_code == 0, result.output
        assert mine.read_text() == "mine"
        assert [p.name for p in (tmp_path / "w" / "E").iterdir()] == ["ds"]


# --- 7. damaged run files: one line naming the run's file and the field -------------------
# Issue 27: probe scores must add up as the test scores do (class 3), and results.json is read
# strictly (class 11): no number as a string, no key twice, no best epoch past those trained.
def in_json(change):
    """A damage of ``results.json``: ``change(body)`` edits its parsed body in place."""

    def damage(path: Path) -> None:
        body = json.loads(path.read_text())
        change(body)
        path.write_text(json.dumps(body, indent=2))

    return damage


def edit(path: str, value: object = None, drop: bool = False, to=None):
    """The record's field at the dotted ``path`` set to ``value``, to ``to(it)``, or removed."""
    *parents, last = [int(key) if key.isdigit() else key for key in path.split(".")]

    @in_json
    def change(body: dict) -> None:
        for key in parents:
            body = body[key]
        if drop:
            del body[last]
        else:
            body[last] = value if to is None else to(body[last])

    return change


def probe(path: str, value: object = None, to=None):
    return edit(f"probe_scores.{path}", value, to=to)


def text(change):
    """A damage of the file's text: ``change(text)`` returns the new text."""
    return lambda path: path.write_text(change(path.read_text()), encoding="utf-8")


def replaced(make):
    return lambda path: (path.unlink(), make(path))


def cut_curve(scores: str, points: int):
    return edit(f"{scores}.curve", to=lambda curve: {k: v[:-points] for k, v in curve.items()})


@in_json
def swap_curves(body: dict) -> None:
    """Another run's probe scores: the far and local counts of the curve swapped."""
    curve = body["probe_scores"]["curve"]
    curve["far"], curve["local"] = curve["local"], curve["far"]
    curve["far_reliance"], curve["local_reliance"] = curve["local_reliance"], curve["far_reliance"]


@in_json
def far_everywhere(body: dict) -> None:
    for region in ("id", "ood", "overall"):
        body["probe_scores"][region]["far_reliance"] = 1.0


@in_json
def counted_past_rows(body: dict) -> None:
    body["probe_scores"]["curve"]["counted"][0] = body["probe_scores"]["rows"] + 1


def checksums(digest: str):
    return edit("data.files", to=lambda files: dict.fromkeys(files, digest))


ROPE_THETA = "position_encoding.rope_parameters.train.rope_theta"
RUN_FILES = {  # case -> (damage, what the error line names)
    "a list": (text(lambda _: "[1, 2]"), "JSON object"),
    "{}": (text(lambda _: "{}"), "Field required"),
    "empty": (text(lambda _: ""), "JSON"),
    "100k deep": (text(lambda _: '{"seed": ' + "[" * 100_000 + "]" * 100_000 + "}"), "JSON"),
    "not UTF-8": (lambda path: path.write_bytes(b'{"preset": "\xff"}'), "JSON"),
    "300 deep in a PE parameter": (edit("position_encoding.parameters.x",
                                        json.loads("[" * 300 + "]" * 300)), "nested too deeply"),
    "seed a string": (edit("seed", "x"), "seed"),
    "seed missing": (edit("seed", drop=True), "seed"),
    "extra key": (edit("hacked", 1), "hacked"),
    "NaN accuracy": (edit("best_val_id_accuracy", float("nan")), "JSON"),
    "Infinity in rope": (edit(ROPE_THETA, float("inf")), "JSON"),
    "1e400 in rope": (text(lambda _: '{"position_encoding": {"rope_parameters": {"train": '
                                     '{"rope_theta": 1e400}}}}'), ROPE_THETA),
    "train batch 0": (edit("train.batch_size", 0), "train.batch_size"),
    "a FIFO nobody writes": (replaced(os.mkfifo), "not a regular file"),
    "a link to /dev/zero": (replaced(lambda p: p.symlink_to("/dev/zero")), "not a regular file"),
    "a folder": (replaced(Path.mkdir), "folder"),
    "300 MB, sparse (a bomb)": (lambda path: os.truncate(path, 300 * 2**20), "larger than"),
    "scores of other data": (edit("scores.spec_id", "0123abcd"), "spec_id"),
    "scores short curve": (cut_curve("scores", 3), "curve"),
    "scores correct of 10^400": (edit("scores.id.correct", 10**400), "scores.id"),
    "scores tokens of 10^400": (edit("scores.id.tokens", 10**400), "scores.id"),
    "scores NaN accuracy": (edit("scores.curve.accuracy.0", float("nan")), "JSON"),
    "scores accuracy not its ratio": (edit("scores.id.accuracy", 0.999), "scores.id.accuracy"),
    "scores counts not the curve": (edit("scores.ood.correct", 0), "ood"),
    "probe scores of the wrong type": (probe("id", "x"), "probe_scores.id"),
    "a wall time of 1e308 s (two summed: Infinity)": (edit("wall_seconds", 1e308), "wall_seconds"),
    "a training time of 1e308 s": (edit("train_seconds", 1e308), "train_seconds"),
}  # fmt: skip
PROBE_SCORES = {  # issue 27, class 3
    "far-reliance 0.99, the counts say less": (probe("id.far_reliance", 0.99),
                                             "probe_scores.id.far_reliance"),
    "OOD far-reliance not far / counted": (probe("ood.far_reliance", 0.5),
                                         "probe_scores.ood.far_reliance"),
    "overall local-reliance not local / counted": (probe("overall.local_reliance", 0.75),
                                                   "probe_scores.overall"),
    "far-reliance 1 everywhere": (far_everywhere, "far_reliance"),
    "far-reliance null with targets counted": (probe("id.far_reliance", None),
                                             "probe_scores.id.far_reliance"),
    "far count past the counted targets": (probe("id.far", 10**6), "probe_scores.id"),
    "ID counts not the curve's": (probe("id.counted", 3), "probe_scores.id"),
    "OOD counts not the curve's": (probe("ood.local", 0), "probe_scores.ood"),
    "fewer probed than counted": (probe("overall.probed", 1), "probe_scores.overall"),
    "probed 10^400": (probe("overall.probed", 10**400), "probe_scores.overall"),
    "a curve point's far count changed": (probe("curve.far.3", 5), "probe_scores.curve[7]"),
    "a curve point counts more targets than rows": (counted_past_rows, "probe_scores.curve[4]"),
    "a negative far count": (probe("curve.far.0", -1), "probe_scores.curve[4]"),
    "the curve cut short": (cut_curve("probe_scores", 2), "probe_scores.curve"),
    "a bucket's counts not the curve's": (probe("buckets.0.far", 4), "buckets[4, 16)"),
    "a bucket moved": (probe("buckets.0.stop", 17), "probe_scores.buckets"),
    "a bucket's OOD flag wrong": (probe("buckets.0.ood", True), "buckets[4, 16).ood"),
    "another run's probe scores (far and local swapped)": (swap_curves, "probe_scores"),
    "another spec id": (probe("spec_id", "0123456789abcdef"), "probe_scores.spec_id"),
    "another config": (probe("config", "recursive"), "probe_scores.config"),
    "another split (test)": (probe("split", "test"), "probe_scores.split"),
    "another split (probe_512)": (probe("split", "probe_512"), "probe_scores.split"),
    "no split": (probe("split", None), "probe_scores.split"),
    "another length": (probe("length", 64), "probe_scores.length"),
    "another row count": (probe("rows", 9), "probe_scores.rows"),
    "another modulus": (probe("modulus", 23), "probe_scores.modulus"),
    "another OOD boundary": (probe("ood_boundary", 32), "probe_scores.ood_boundary"),
    "the test scores in the probe's place": (
        in_json(lambda body: body.update(probe_scores=body["scores"])), "probe_scores"),
    "probe scores missing": (edit("probe_scores", drop=True), "probe_scores: Field required"),
    "probe scores null": (edit("probe_scores", None), "probe_scores"),
}  # fmt: skip
STRICT = {  # issue 27, class 11
    "a string accuracy": (edit("scores.id.accuracy", "0.5"), "scores.id.accuracy: a string"),
    "a string accuracy that is the right ratio": (edit("scores.id.accuracy", to=str),
                                                  "scores.id.accuracy: a string"),
    "a string count": (edit("scores.id.correct", to=str), "scores.id.correct: a string"),
    "a string far-reliance": (probe("id.far_reliance", to=str),
                              "probe_scores.id.far_reliance: a string"),
    "seed true": (edit("seed", True), "seed: a boolean"),
    "epochs a string": (edit("train.epochs", "1"), "train.epochs"),
    "best_epoch 999 of 1": (edit("best_epoch", 999), "best_epoch: 999"),
    "best_epoch 2 of 1": (edit("best_epoch", 2), "best_epoch: 2"),
    "zeroed data checksums": (checksums("0" * 64), "data.files"),
    "a data checksum not hex": (checksums("x" * 64), "data.files"),
    "no data files": (edit("data.files", {}), "data.files"),
    "a key twice (seed)": (
        text(lambda t: t.replace('\n  "seed": ', '\n  "seed": 7,\n  "seed": ', 1)),
        "the key 'seed' is repeated"),
    "a key twice (inside the probe scores)": (
        text(lambda t: t.replace('"far_reliance": ', '"far_reliance": 1.0, "far_reliance": ', 1)),
        "the key 'far_reliance' is repeated"),
    "NaN best epoch": (text(lambda t: t.replace('"best_epoch": 1,', '"best_epoch": NaN,')), "JSON"),
    "UTF-16": (lambda path: path.write_bytes(path.read_text().encode("utf-16")), "JSON"),
}  # fmt: skip
DAMAGED_RUNS = {
    **{f"run:{case}": value for case, value in RUN_FILES.items()},
    **{f"class 3: {case}": value for case, value in PROBE_SCORES.items()},
    **{f"class 11: {case}": value for case, value in STRICT.items()},
}


@pytest.mark.parametrize("case", sorted(DAMAGED_RUNS))
def test_a_damaged_run_file_is_one_bounded_line_naming_the_run_and_the_field(
    assert_clean_error, cli, recorded, tmp_path, trained_runs, case
):
    """Read within bounded memory: a 300 MB file is refused unread."""
    damage, field = DAMAGED_RUNS[case]
    bad = shutil.copytree(trained_runs / "rope-1", tmp_path / "runs" / "bad")
    damage(bad / "results.json")
    out, js = tmp_path / "R.md", tmp_path / "r.json"
    tracemalloc.start()
    result = cli("results", tmp_path / "runs", "--out", out, "--json", js)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    with recorded("bomb" if "(a bomb)" in case else "damage", case):
        line = assert_clean_error(result, 1, str(bad / "results.json"), field)
        assert len(line) < 400 and peak < 8 * 2**20
        assert not out.exists()
        assert not js.exists()


def test_a_run_of_a_task_not_registered_here_names_posgen_tasks_and_is_not_called_damaged(
    assert_clean_error, cli, tmp_path, trained_runs
):
    """Before: exit 1, "spec.task: Input should be 'recursive', ..." (and posgen sweep --status
    listed such finished runs as waiting, to be set aside and trained again)."""
    run = shutil.copytree(trained_runs / "rope-1", tmp_path / "runs" / "quarter")
    body = json.loads((run / "results.json").read_text())
    body["spec"]["task"] = "quarter"  # a task of one's own, its module not imported
    (run / "results.json").write_text(json.dumps(body))
    result = cli("results", tmp_path / "runs", "--out", tmp_path / "R.md")
    assert_clean_error(result, 2, "task 'quarter' not registered in this process", "POSGEN_TASKS")
    assert not (tmp_path / "R.md").exists()


# --- 8. determinism ----------------------------------------------------------------------
def test_runs_are_byte_identical_with_one_or_two_threads_parse_posgen_json_once_and_force(
    assert_clean_error, cli, tmp_path, data, run, monkeypatch
):
    """Same thread count, same bytes (1: ``run`` and ``a``; 2: ``b`` and ``c``; another seed's
    other bytes: test_results_counts_a_run_of_another_seed_trained_into_another_runs_folder);
    ``a`` parses posgen.json once; ``b`` trains only with --force."""
    parses, validate = [], Manifest.model_validate.__func__

    def counted(cls, *args, **kwargs):
        parses.append(1)
        return validate(cls, *args, **kwargs)

    with monkeypatch.context() as watched:
        watched.setattr(Manifest, "model_validate", classmethod(counted))
        result = cli(*train_args(data, tmp_path / "a"), "--threads", "1")
    assert result.exit_code == 0, result.output
    assert len(parses) == 1
    with monkeypatch.context() as short:
        short.setattr("posgen.cli.train.available_bytes", lambda: 1)
        assert_clean_error(cli(*train_args(data, tmp_path / "b"), "--threads", "2"), 2, "--force")
        forced = cli(*train_args(data, tmp_path / "b", "--force"), "--threads", "2")
    assert forced.exit_code == 0, forced.output
    result = cli(*train_args(data, tmp_path / "c"), "--threads", "2")
    assert result.exit_code == 0, result.output
    for pair in ([run, tmp_path / "a"], [tmp_path / "b", tmp_path / "c"]):
        assert (pair[0] / PREDICTIONS).read_bytes() == (pair[1] / PREDICTIONS).read_bytes()
        scores = [json.loads((out / "results.json").read_text())["scores"] for out in pair]
        assert scores[0] == scores[1]
