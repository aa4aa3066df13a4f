"""Killed runs never lose data: real ``posgen`` processes held at a kill point
(tests/kill_points.py) and signalled there; a stopped command's one line (``POSGEN_SIGNAL_AT``)."""

from __future__ import annotations

import os
import runpy
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import posgen.signals
import posgen.store.safety
from posgen.signals import Interrupted
from posgen.store import check_dataset
from posgen.store.safety import atomic_folder, leftovers

GUARD = 600  # seconds: only a hung process waits this long (a failure guard)

ROOT = Path(__file__).resolve().parents[2]
# 2 configs, 6 shards: every kill point falls mid-run
SPEC = ["--task", "cot", "--task", "semirecursive", "-m", "97", "--train-size", "1000",
        "--val-size", "100", "--test-size", "100", "--seed", "7"]  # fmt: skip
OLD_SPEC = [*SPEC[:-1], "8"]


def generate(cli, out: Path, args: list[str], overwrite: bool = False):
    return cli("generate", "--out", out, "-q", *(["--overwrite"] if overwrite else []), *args)


@pytest.fixture(scope="module")
def reference(cli, tmp_path_factory) -> dict[str, Path]:
    """Complete runs of the spec ("new") and of the 'old' dataset."""
    base = tmp_path_factory.mktemp("reference")
    assert generate(cli, base / "new", SPEC).exit_code == 0
    assert generate(cli, base / "old", OLD_SPEC).exit_code == 0
    return {"new": base / "new", "old": base / "old"}


def builds(out: Path) -> list[Path]:
    return [p for p in leftovers(out) if posgen.store.safety.TMP_TAG in p.name]


def kill_at(fork_child, kill_points, out, point, signum, total, overwrite, fresh=False):
    """``posgen generate`` (in a new interpreter if ``fresh``) signalled at ``point``."""
    args = ["generate", "--out", str(out), "-q", *SPEC, *(["--overwrite"] if overwrite else [])]
    command = [*kill_points, point, str(out), str(total), *args]

    def held_run() -> None:  # tests/kill_points.py as a program, in the forked child
        sys.argv = command[1:]
        runpy.run_path(command[1], run_name="__main__")

    if fresh:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        pid, stream = proc.pid, proc.stdout
    else:
        pid, read = fork_child(held_run)
        stream = os.fdopen(read, "rb")
    with stream:
        said = stream.readline().decode().strip()  # the run holds here until signalled
        os.kill(pid, signum if said == point else signal.SIGKILL)  # a failure never waits on
        output = stream.read().decode()
    code = proc.wait(GUARD) if fresh else os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    assert said == point, f"the run never reached {point!r}: {said} {output}"
    return subprocess.CompletedProcess(command, code, output)


POINTS = ["start", "build folder", "first shard", "half the bytes", "manifest"]
HANDLED = [signal.SIGTERM, signal.SIGINT]  # one handler takes both: each point meets one
CASES = [
    (point, signum, overwrite)
    for i, (point, overwrite) in enumerate(
        [(point, False) for point in POINTS] + [("first shard", True), ("half the bytes", True)]
    )
    for signum in (signal.SIGKILL, HANDLED[i % 2])
]


@pytest.mark.parametrize(
    ("point", "signum", "overwrite"),
    CASES,
    ids=[f"{p}-{signal.Signals(s).name}-{'replace' if o else 'new'}" for p, s, o in CASES],
)
def test_a_killed_run_leaves_the_target_absent_or_complete_and_a_rerun_is_identical(
    cli, fork_child, kill_points, recorded, tree, tmp_path, reference, point, signum, overwrite
):
    out = tmp_path / "ds"
    expected = tree(reference["new"])
    if overwrite:  # the old dataset, as its own run wrote it
        shutil.copytree(reference["old"], out, symlinks=True)
    total = sum(f.stat().st_size for f in reference["new"].rglob("*") if f.is_file())
    fresh = (point, signum, overwrite) == CASES[0]  # one case in a new interpreter
    killed = kill_at(fork_child, kill_points, out, point, signum, total, overwrite, fresh)
    key = f"{point}/{signal.Signals(signum).name}/{'replace' if overwrite else 'new'}"
    with recorded("kill", key):
        assert killed.returncode != 0, killed.stdout  # stopped mid-run, at the point
        state = tree(out) if out.exists() else None
        before = tree(reference["old"]) if overwrite else None
        assert state in (before, expected), f"target neither absent/old nor complete after {key}"
        if signum != signal.SIGKILL:  # SIGTERM/SIGINT clean up themselves
            assert not builds(out), f"{signal.Signals(signum).name} left {builds(out)}"
        rerun = generate(cli, out, SPEC, overwrite=overwrite)
        assert rerun.exit_code == 0, rerun.output
        assert tree(out) == expected
        assert not leftovers(out)
        assert check_dataset(out) == []


OLD = '{"format": "posgen-dataset", "old": true}'


@pytest.mark.parametrize("fault", ["SIGTERM after the exchange", "SIGTERM after each rename",
                                   "the second rename fails"])  # fmt: skip
def test_a_signal_during_the_commit_is_held_until_the_dataset_is_complete_a_failure_puts_it_back(
    tmp_path, monkeypatch, fault
):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "posgen.json").write_text(OLD)
    real_rename, real_exchange, renames = os.rename, posgen.store.safety.exchange, []

    def rename(src, dst):  # without renameat2: the old dataset aside, the new one in place
        renames.append(dst)
        if fault == "the second rename fails" and len(renames) == 2:
            raise OSError(5, "Input/output error")
        real_rename(src, dst)
        if fault == "SIGTERM after each rename":
            os.kill(os.getpid(), signal.SIGTERM)  # arrives between the two renames

    def exchange(a, b):
        assert real_exchange(a, b)  # Linux: one step
        os.kill(os.getpid(), signal.SIGTERM)  # arrives before the old one is deleted
        return True

    if fault == "SIGTERM after the exchange":
        monkeypatch.setattr(posgen.store.safety, "exchange", exchange)
    else:
        monkeypatch.setattr(posgen.store.safety, "exchange", lambda a, b: False)
        monkeypatch.setattr(posgen.store.safety.os, "rename", rename)
    failed = fault == "the second rename fails"
    raised = OSError if failed else Interrupted
    with pytest.raises(raised) as stopped, atomic_folder(out, overwrite=True) as build:
        (build / "posgen.json").write_text("new")
    monkeypatch.undo()
    if not failed:
        assert stopped.value.exit_code == 128 + signal.SIGTERM
        assert stopped.value.completed
    assert (out / "posgen.json").read_text() == (OLD if failed else "new")
    assert leftovers(out) == []


# --- the line a stopped command leaves (POSGEN_SIGNAL_AT) -------------------------------
@pytest.fixture
def stopped_at(cli, monkeypatch):
    """``stopped_at(point, *args, cwd=folder)``: ``posgen *args`` from ``folder``, SIGTERM at
    ``point``."""

    def run(point: str, *args: object, cwd: Path):
        monkeypatch.chdir(cwd)
        monkeypatch.setenv(posgen.signals.HOOK_ENV, f"{point}:SIGTERM")
        try:
            return cli(*args)
        finally:
            monkeypatch.delenv(posgen.signals.HOOK_ENV)

    return run


NOT_CREATED = "no partial dataset was left; {out} was not created"
STOPPED = [  # (command, moment of the SIGTERM, whether --out holds a dataset already, left)
    ("publish", "progress", False, NOT_CREATED),
    ("publish", "validate", False, NOT_CREATED),
    ("publish", "progress", True, "no partial dataset was left; the previous dataset at {out} "
     "is unchanged"),
    ("generate --spec", "progress", False, NOT_CREATED),
]  # fmt: skip


@pytest.mark.parametrize(
    "case", STOPPED, ids=[f"{c[:8]}-{p}-{'replace' if e else 'new'}" for c, p, e, _ in STOPPED]
)
def test_sigterm_while_writing_a_dataset_exits_143_with_one_line_saying_what_was_left(
    stopped_at, assert_clean_error, cli, tree, tmp_path, tiny_spec_file, case
):
    command, point, existing, left = case
    out = tmp_path / "out"
    args = [*command.split(), tiny_spec_file, "--out", out, "-q"]
    if existing:
        assert cli(*args).exit_code == 0
        args.append("--overwrite")
    before = tree(out) if existing else None
    done = stopped_at(point, *args, cwd=tmp_path)
    line = assert_clean_error(done, 143)
    assert line == f"error: interrupted by SIGTERM; {left.format(out=out)}"
    assert (tree(out) if out.exists() else None) == before
    assert {p.name for p in tmp_path.iterdir()} == {"tiny.toml", *(["out"] if existing else [])}
    assert leftovers(out) == []


@pytest.mark.parametrize("value", ["cli", "cli:x:SIGTERM", "cli:1:2:SIGTERM", "cli:SIGFOO", "cli:"])
def test_a_malformed_signal_hook_is_ignored_not_a_traceback(cli, tiny_cot, value):
    result = cli("validate", tiny_cot, env={posgen.signals.HOOK_ENV: value})
    assert result.exit_code == 0, result.output


TINY = ["--layers", "1", "--hidden", "16", "--heads", "2", "--intermediate", "32",
        "--batch-size", "16", "--eval-batch-size", "8", "--epochs", "2",
        "--max-steps", "4"]  # fmt: skip


@pytest.mark.parametrize("point", ["load", "step", "write"])
def test_sigterm_during_train_leaves_only_its_checkpoint_which_a_rerun_resumes(
    stopped_at, assert_clean_error, cli, tmp_path, tiny_training_dataset, point
):
    """``load``: before the first checkpoint; ``step`` (mid-epoch) and ``write``: after it."""
    pytest.importorskip("torch")
    from posgen.train.job import read_progress, resume_folder

    out, resume = tmp_path / "run", resume_folder(tmp_path / "run")
    args = ["train", "--data", tiny_training_dataset, "--config", "recursive", "--pe", "rope",
            "--seed", "0", "--out", out, *TINY]  # fmt: skip
    line = assert_clean_error(stopped_at(point, *args, "-q", cwd=tmp_path), 143)
    left = f"checkpoint kept in {resume}: rerun the same command to resume"
    if point == "load":
        left = f"no partial run folder was left; {out} was not created"
    assert line == f"error: interrupted by SIGTERM; {left}"
    if point == "load":
        assert list(tmp_path.iterdir()) == []
        return
    assert sorted(p.name for p in tmp_path.iterdir()) == [resume.name]  # no run folder
    assert (resume / "checkpoint.pt").is_file()
    assert read_progress(resume) is not None
    resumed = cli(*args)
    assert "resuming from its checkpoint" in resumed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
