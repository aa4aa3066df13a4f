"""The commands that write a dataset or a run folder share one runner (``posgen.cli.runner``):
the same checks before writing, and the same one line and exit status when stopped.

Signals are real: a ``posgen`` subprocess sends itself SIGTERM at a named moment
(``POSGEN_SIGNAL_AT=POINT:SIGNAL``, :func:`posgen.signals.point`), so no case depends on the
machine's speed. ``progress``: a dataset's shard is being written (its build folder exists);
``validate``: ``publish`` validates the complete build folder before it is renamed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import posgen.cli.runner
import posgen.signals
from posgen.store.safety import leftovers
from tests.cli_support import assert_clean_error, invoke

ROOT = Path(__file__).resolve().parents[2]
SPEC = """\
name = "tiny"
description = "Tiny benchmark for the runner tests."
[defaults]
train_size = 40
val_size = 10
test_size = 10
test_length = 96
[configs.cot]
"""


def posgen_stopped_at(point: str, *args: object, cwd: Path) -> subprocess.CompletedProcess:
    """``posgen *args`` in a subprocess that sends itself SIGTERM at ``point``."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        posgen.signals.HOOK_ENV: f"{point}:SIGTERM",
    }
    command = [sys.executable, "-m", "posgen", *map(str, args)]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(SPEC)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


NOT_CREATED = "no partial dataset was left; {out} was not created"
STOPPED = [  # (command, moment of the SIGTERM, whether --out holds a dataset already, left)
    ("publish", "progress", False, NOT_CREATED),
    ("publish", "validate", False, NOT_CREATED),
    ("publish", "progress", True, "no partial dataset was left; the previous dataset at {out} "
     "is unchanged"),
    ("generate", "progress", False, NOT_CREATED),
]  # fmt: skip


@pytest.mark.parametrize(("command", "point", "existing", "left"), STOPPED)
def test_sigterm_while_writing_a_dataset_exits_143_with_one_line_saying_what_was_left(
    tmp_path, spec_file, command, point, existing, left
):
    out = tmp_path / "out"
    args = ["publish", spec_file] if command == "publish" else ["generate", "--spec", spec_file]
    args += ["--out", out, "-q"]
    if existing:
        assert invoke(*args).exit_code == 0
        args.append("--overwrite")
    before = snapshot(out) if existing else None
    done = posgen_stopped_at(point, *args, cwd=tmp_path)
    line = assert_clean_error(done, 143)
    assert line == f"error: interrupted by SIGTERM; {left.format(out=out)}"
    assert (snapshot(out) if out.exists() else None) == before
    assert {p.name for p in tmp_path.iterdir()} == {"tiny.toml", *(["out"] if existing else [])}
    assert leftovers(out) == []


def test_publish_refuses_a_spec_larger_than_the_free_disk_unless_forced(
    tmp_path, spec_file, monkeypatch
):
    monkeypatch.setattr(posgen.cli.runner, "free_bytes", lambda path: 1000)
    out = tmp_path / "hub"
    refused = invoke("publish", spec_file, "--out", out, "-q")
    assert_clean_error(refused, 2, "only 1000 B are free", "--force")
    assert not out.exists()
    forced = invoke("publish", spec_file, "--out", out, "-q", "--force")
    assert forced.exit_code == 0, forced.output
    assert (out / "posgen.json").is_file()


def test_publish_into_an_unwritable_place_fails_like_generate(tmp_path, spec_file):
    (tmp_path / "blocker").write_text("")
    out = tmp_path / "blocker" / "hub"
    published = invoke("publish", spec_file, "--out", out, "-q")
    generated = invoke("generate", "--out", out, "--task", "cot", "-q")
    line = assert_clean_error(published, 2, f"{tmp_path / 'blocker'} is a file")
    assert assert_clean_error(generated, 2) == line


def test_publish_cleans_up_what_a_killed_run_left_with_a_note(tmp_path, spec_file):
    out = tmp_path / "hub"
    stale = tmp_path / ".hub.posgen-tmp-dead"
    stale.mkdir()
    published = invoke("publish", spec_file, "--out", out, "-q")
    assert published.exit_code == 0, published.output
    assert f"note: removed leftover {stale}" in published.stderr
    assert not stale.exists()


def test_the_removed_shard_alias_is_an_unknown_flag(tmp_path):
    result = invoke("generate", "--out", tmp_path / "ds", "--task", "cot", "--shard", "0/2")
    assert_clean_error(result, 2, "--shard")
    assert not (tmp_path / "ds").exists()


TINY = ["--layers", "1", "--hidden", "16", "--heads", "2", "--intermediate", "32",
        "--batch-size", "16", "--eval-batch-size", "8", "--epochs", "2",
        "--max-steps", "4"]  # fmt: skip
CHECKPOINTED = ["step", "write"]
"""Moments of ``posgen train`` after its first checkpoint: mid-epoch (the signal makes it
checkpoint at the step's end) and while the run folder is being written."""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from posgen import write_dataset
    from posgen.spec import default_benchmark

    root = tmp_path_factory.mktemp("runner") / "ds"
    write_dataset(default_benchmark(("recursive",), train_size=48, val_size=8, test_size=8), root)
    return root


def train_args(data: Path, out: Path) -> list[object]:
    return ["train", "--data", data, "--pe", "rope", "--seed", "0", "--out", out, *TINY]


def test_sigterm_before_trains_first_checkpoint_exits_143_and_leaves_nothing(tmp_path, data):
    out = tmp_path / "run"
    done = posgen_stopped_at("load", *train_args(data, out), "-q", cwd=tmp_path)
    line = assert_clean_error(done, 143)
    assert line == (
        f"error: interrupted by SIGTERM; no partial run folder was left; {out} was not created"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("point", CHECKPOINTED)
def test_sigterm_during_train_leaves_only_its_checkpoint_which_a_rerun_resumes(
    tmp_path, data, point
):
    from posgen.train.job import read_progress, resume_folder

    out, resume = tmp_path / "run", resume_folder(tmp_path / "run")
    done = posgen_stopped_at(point, *train_args(data, out), "-q", cwd=tmp_path)
    line = assert_clean_error(done, 143)
    assert line == (
        f"error: interrupted by SIGTERM; checkpoint kept in {resume}: rerun the same command "
        "to resume"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [resume.name]  # no run folder
    assert (resume / "checkpoint.pt").is_file()
    assert read_progress(resume) is not None
    resumed = invoke(*train_args(data, out))
    assert "resuming from its checkpoint" in resumed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_sweep_into_an_unwritable_place_is_refused_before_the_grid_is_read(tmp_path):
    (tmp_path / "blocker").write_text("")
    out = tmp_path / "blocker" / "sweep"
    result = invoke("sweep", tmp_path / "no-grid.toml", "--out", out)
    assert_clean_error(result, 2, f"--out: cannot create {out}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]
