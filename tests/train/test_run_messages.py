"""Messages that say what happened (issue 27, class 10): stderr ends with the error line after
the progress bar, ``results`` says why runs cannot be averaged, the memory estimate honours
the address-space limit and the memory cgroup."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import posgen.signals  # noqa: E402
from posgen import write_dataset  # noqa: E402
from posgen.spec import default_benchmark  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--layers=1", "--hidden=16", "--heads=2", "--intermediate=32", "--batch-size=16"]
FAST = [*TINY, "--eval-batch-size=8", "--epochs=1", "--max-steps=2", "--seed=0"]


def train(data: Path, out: Path, *extra: object) -> list[object]:
    return ["train", "--data", data, "--pe", "rope", "--out", out, *FAST, *extra]


@pytest.fixture(scope="module")
def runs(cli, tmp_path_factory) -> dict[str, Path]:
    """Runs of rope, seed 0: ``a`` on one dataset named ``ds``, ``other-data`` on another
    dataset also named ``ds``, ``other-settings`` on ``a``'s data with 3 steps, not 2."""
    base = tmp_path_factory.mktemp("messages")
    first, second = base / "one" / "ds", base / "two" / "ds"
    write_dataset(default_benchmark(("cot",), train_size=32, val_size=8, test_size=8), first)
    write_dataset(default_benchmark(("cot",), train_size=40, val_size=8, test_size=8), second)
    made = {
        "a": train(first, base / "runs" / "a", "-q"),
        "other-data": train(second, base / "runs" / "other-data", "-q"),
        "other-settings": train(first, base / "runs" / "other-settings", "-q", "--max-steps=3"),
    }
    for args in made.values():
        result = cli(*args)
        assert result.exit_code == 0, result.output
    return {name: base / "runs" / name for name in made} | {"data": first}


# --- the progress bar closes before the error line ------------------------------------------------


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_stderr_ends_with_the_error_line_after_the_progress_bar(
    assert_clean_error, cli, recorded, runs, tmp_path, monkeypatch, signame
):
    monkeypatch.setenv(posgen.signals.HOOK_ENV, f"step:1:{signame}")
    result = cli(*train(runs["data"], tmp_path / "run"))  # progress bar on
    with recorded("kill", f"issue 27 class 10: progress bar then {signame}"):
        line = assert_clean_error(result, (129, 130, 143), f"interrupted by {signame}")
        assert "step" in result.stderr  # the bar was drawn
        assert re.split(r"[\r\n]", result.stderr.rstrip("\n"))[-1] == line


# --- posgen results: why runs cannot be averaged ----------------------------------------------

CELLS = {  # the second run beside run a, and a fragment of the refusal
    "another dataset of the same folder name": ("other-data", "different datasets"),
    "other settings, same seed": ("other-settings", "different settings"),
    "a copy": (None, "are the same run"),
}


@pytest.mark.parametrize("case", sorted(CELLS))
def test_results_says_what_differs_between_two_runs_of_one_cell(
    assert_clean_error, cli, recorded, runs, tmp_path, case
):
    other, fragment = CELLS[case]
    folder = tmp_path / "runs"
    shutil.copytree(runs["a"], folder / "a")
    shutil.copytree(runs[other] if other else runs["a"], folder / "b")
    result = cli("results", folder, "--out", tmp_path / "R.md")
    with recorded("target", f"issue 27 class 10: results {case}"):
        assert_clean_error(result, 2, fragment)
        assert not (tmp_path / "R.md").exists()


# --- the memory estimate --------------------------------------------------------------------


GIB = 2**30
CGROUPS = {  # /proc/self/cgroup, the files under the cgroup mount, what is left (GiB)
    "v2, the process's own cgroup": (
        "0::/user.slice/job\n",
        {"user.slice/job/memory.max": 2 * GIB, "user.slice/job/memory.current": GIB // 2},
        1.5,
    ),
    "v2, at the mount's root": ("0::/\n", {"memory.max": GIB, "memory.current": 0}, 1.0),
    "v1, the process's own cgroup": (
        "4:memory:/batch/7\n0::/\n",
        {
            "memory/batch/7/memory.limit_in_bytes": 3 * GIB,
            "memory/batch/7/memory.usage_in_bytes": GIB,
        },
        2.0,
    ),
    "v2 without a limit": ("0::/a\n", {"a/memory.max": "max", "a/memory.current": 5}, 16.0),
}


@pytest.mark.parametrize("case", sorted(CGROUPS))
def test_the_estimate_honours_the_memory_cgroup_the_process_is_in(recorded, tmp_path, case):
    from posgen.train.config import available_bytes

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
    limit = 4 * 2**30
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
        "from posgen.train.config import available_bytes\n"
        "print(available_bytes(), flush=True)\n"
        "from posgen.cli import main\n"
        f"main(['train', '--data', {str(data)!r}, '--pe', 'rope', '--batch-size', '65536', "
        f"'--out', {str(tmp_path / 'run')!r}])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    with recorded("resources", "issue 27 class 10: a run past RLIMIT_AS"):
        assert 0 < int(done.stdout) <= limit
        assert_clean_error(done, 2, "memory", "--force")
        assert not (tmp_path / "run").exists()
