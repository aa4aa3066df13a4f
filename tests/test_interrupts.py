"""Killed runs never lose data: real ``posgen generate`` subprocesses stopped by signals.

Each case starts a run, waits for a kill point (a moment after start, the build folder, the
first shard file, half the bytes, the manifest), sends SIGKILL, SIGTERM or SIGINT, and checks
that the target is absent or complete, an old dataset is intact, SIGTERM/SIGINT left nothing
behind, and the next run cleans up whatever SIGKILL left and writes the same bytes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import posgen.store.atomic
from posgen.cli import main
from posgen.store import check_dataset
from posgen.store.atomic import Interrupted, atomic_folder, leftovers, recover
from tests.hardening_counts import record

ROOT = Path(__file__).resolve().parents[1]
# ~4.9 M tokens over 2 configs: long enough (about a second) to be stopped mid-run
SPEC = ["--task", "cot", "--task", "semirecursive", "-m", "97", "--train-size", "30000",
        "--val-size", "2000", "--test-size", "2000", "--seed", "7"]  # fmt: skip
OLD_SPEC = [*SPEC[:-1], "8"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def cli(out: Path, args: list[str], overwrite: bool = False):
    extra = ["--overwrite"] if overwrite else []
    return CliRunner().invoke(main, ["generate", "--out", str(out), "-q", *extra, *args])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """The files a complete run writes, for the spec and for the 'old' dataset."""
    base = tmp_path_factory.mktemp("reference")
    assert cli(base / "new", SPEC).exit_code == 0
    assert cli(base / "old", OLD_SPEC).exit_code == 0
    return {"new": snapshot(base / "new"), "old": snapshot(base / "old")}


def builds(out: Path) -> list[Path]:
    return [p for p in leftovers(out) if posgen.store.atomic.TMP_TAG in p.name]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def reached(point: str, out: Path, started: float, total: int) -> bool:
    """Whether the run writing ``out`` has reached the kill point."""
    if point == "start":
        return time.monotonic() - started > 0.3
    found = builds(out)
    if point == "build folder":
        return bool(found)
    if point == "first shard":
        return any(any(b.rglob("*.parquet")) for b in found)
    if point == "half the bytes":
        return any(folder_bytes(b) >= total // 2 for b in found)
    if point == "manifest":
        return any((b / "posgen.json").exists() for b in found)
    raise ValueError(point)


def kill_at(out: Path, point: str, signum: int, total: int, overwrite: bool) -> int:
    """Run ``posgen generate`` in a subprocess, signal it at ``point``; its return code."""
    command = [sys.executable, "-m", "posgen", "generate", "--out", str(out), "-q", *SPEC]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command + (["--overwrite"] if overwrite else []), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    started = time.monotonic()
    while proc.poll() is None and not reached(point, out, started, total):
        time.sleep(0.002)
    if proc.poll() is None:
        proc.send_signal(signum)
    proc.communicate(timeout=60)
    return proc.returncode


POINTS = ["start", "build folder", "first shard", "half the bytes", "manifest"]
SIGNALS = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT]
CASES = [(point, signum, False) for point in POINTS for signum in SIGNALS] + [
    (point, signum, True) for point in ("first shard", "half the bytes") for signum in SIGNALS
]


@pytest.mark.parametrize(
    ("point", "signum", "overwrite"),
    CASES,
    ids=[f"{p}-{signal.Signals(s).name}-{'replace' if o else 'new'}" for p, s, o in CASES],
)
def test_a_killed_run_leaves_the_target_absent_or_complete_and_a_rerun_is_identical(
    tmp_path, reference, point, signum, overwrite
):
    out = tmp_path / "ds"
    expected = reference["new"]
    if overwrite:
        assert cli(out, OLD_SPEC).exit_code == 0
    total = sum(len(data) for data in expected.values())
    code = kill_at(out, point, signum, total, overwrite)
    key = f"{point}/{signal.Signals(signum).name}/{'replace' if overwrite else 'new'}"
    if code == 0:  # finished before the kill point was seen: must simply be complete
        record("kill_finished", key, snapshot(out) == expected)
        assert snapshot(out) == expected
        return

    state = snapshot(out) if out.exists() else None
    intact = state in (None, expected) if not overwrite else state in (reference["old"], expected)
    clean = signum == signal.SIGKILL or not builds(out)  # SIGTERM/SIGINT clean up themselves
    rerun = cli(out, SPEC, overwrite=overwrite)
    identical = rerun.exit_code == 0 and snapshot(out) == expected and not leftovers(out)
    record("kill", key, intact and clean and identical)
    assert intact, f"target neither absent/old nor complete after {key}"
    assert clean, f"{signal.Signals(signum).name} left {builds(out)}"
    assert identical, rerun.output
    assert check_dataset(out) == []


def test_the_next_run_reports_the_leftovers_it_cleans_up(tmp_path, reference):
    out = tmp_path / "ds"
    stale = tmp_path / f".ds{posgen.store.atomic.TMP_TAG}999999999-deadbeef"
    (stale / "data").mkdir(parents=True)
    result = cli(out, SPEC)
    assert result.exit_code == 0
    assert f"note: removed leftover {stale}" in result.output
    assert not stale.exists() and snapshot(out) == reference["new"]


def test_a_parked_dataset_is_restored_when_a_run_died_between_its_renames(tmp_path):
    parked = tmp_path / f".ds{posgen.store.atomic.OLD_TAG}1a2b3c4d"
    parked.mkdir()
    (parked / "posgen.json").write_text("{}")
    assert recover(tmp_path / "ds") == [
        f"restored {tmp_path / 'ds'} from {parked.name} (a run died while replacing it)"
    ]
    assert (tmp_path / "ds" / "posgen.json").read_text() == "{}"


@pytest.mark.parametrize("commit", ["exchange", "two renames"])
def test_a_signal_during_the_commit_is_held_until_the_dataset_is_complete(
    tmp_path, monkeypatch, commit
):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "posgen.json").write_text("old")
    real_rename, real_exchange = os.rename, posgen.store.atomic.exchange

    def rename_then_signal(src, dst):
        real_rename(src, dst)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives between the two renames

    def exchange_then_signal(a, b):
        assert real_exchange(a, b)  # Linux: one step
        os.kill(os.getpid(), signal.SIGTERM)  # arrives before the old one is deleted
        return True

    if commit == "exchange":
        monkeypatch.setattr(posgen.store.atomic, "exchange", exchange_then_signal)
    else:
        monkeypatch.setattr(posgen.store.atomic, "exchange", lambda a, b: False)
        monkeypatch.setattr(posgen.store.atomic.os, "rename", rename_then_signal)
    with pytest.raises(Interrupted) as stopped, atomic_folder(out, overwrite=True) as build:
        (build / "posgen.json").write_text("new")
    assert stopped.value.exit_code == 128 + signal.SIGTERM and stopped.value.completed
    assert (out / "posgen.json").read_text() == "new"
    assert leftovers(out) == []


def test_a_failure_between_the_renames_puts_the_old_dataset_back(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "posgen.json").write_text("old")
    real_rename = os.rename
    calls = []

    def fail_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(posgen.store.atomic, "exchange", lambda a, b: False)  # no renameat2
    monkeypatch.setattr(posgen.store.atomic.os, "rename", fail_second)
    with pytest.raises(OSError), atomic_folder(out, overwrite=True) as build:
        (build / "posgen.json").write_text("new")
    monkeypatch.undo()
    assert (out / "posgen.json").read_text() == "old"
    assert leftovers(out) == []


def test_sigterm_exits_143_with_one_line_saying_nothing_was_left(tmp_path, reference):
    out = tmp_path / "ds"
    total = sum(len(data) for data in reference["new"].values())
    command = [sys.executable, "-m", "posgen", "generate", "--out", str(out), "-q", *SPEC]
    proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    started = time.monotonic()
    while proc.poll() is None and not reached("first shard", out, started, total):
        time.sleep(0.002)
    if proc.poll() is not None:
        pytest.skip("the run finished before the first shard was seen (machine too fast)")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert [line for line in stderr.splitlines() if line.startswith("error")] == [
        f"error: interrupted by SIGTERM; no partial dataset was left; {out} was not created"
    ]
    assert not out.exists() and leftovers(out) == []
