"""Disk full, unwritable targets and oversized specs: a clear error and no partial dataset (a
full disk is a real process whose file-size limit makes writes fail, as ENOSPC would)."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest

import posgen.cli
from posgen.cli import estimate_benchmark, refusals
from posgen.spec import default_benchmark, resolve_benchmark
from posgen.store import write_dataset
from posgen.store.safety import leftovers

SPEC = ["--task", "cot", "-m", "97", "--train-size", "20000", "--val-size", "500",
        "--test-size", "500"]  # fmt: skip


def limited_run(fork_child, out: Path, limit: int, *extra: str) -> subprocess.CompletedProcess:
    """``posgen generate`` in a forked child writing files of at most ``limit`` bytes."""
    from posgen.__main__ import run

    args = ["generate", "--out", str(out), "-q", *SPEC, *extra]

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        run(args)

    pid, read = fork_child(limited, stdout=False)
    with open(read, "rb") as pipe:  # until the child exits
        stderr = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return subprocess.CompletedProcess(args, os.waitstatus_to_exitcode(status), "", stderr)


FULL_DISKS = {  # case -> (file-size limit, replacing an existing dataset)
    "limit 0": (0, False),
    "limit 4096": (4096, False),
    "limit 200000": (200_000, False),
    "limit 4096 while replacing": (4096, True),
}


@pytest.mark.parametrize("case", list(FULL_DISKS))
def test_a_full_disk_fails_with_exit_1_naming_the_file_and_keeps_what_was_there(
    assert_clean_error, cli, fork_child, recorded, tree, tmp_path, case
):
    limit, replacing = FULL_DISKS[case]
    out = tmp_path / "ds"
    if replacing:
        assert cli("generate", "--out", out, "-q", "--task", "cot").exit_code == 0
    before = tree(tmp_path)
    proc = limited_run(fork_child, out, limit, *(["--overwrite"] if replacing else []))
    with recorded("disk", f"file-size {case}"):
        said = [f"writing {out}/data/cot/", "File too large", "needs about"]
        kept = ["the previous dataset at"] if replacing else []
        assert_clean_error(proc, 1, *said, *kept)
        assert tree(tmp_path) == before
        assert leftovers(out) == []


def test_a_build_that_fails_at_the_open_files_limit_leaves_no_build_folder(fork_child, tmp_path):
    """``generate --num-proc 2`` under ``ulimit -n 10`` said "no partial dataset was left" and
    left an empty ``.ds.posgen-tmp-*``: every descriptor was taken when it was removed."""
    from posgen.store.safety import atomic_folder

    out = tmp_path / "ds"

    def body() -> None:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )
        taken = []
        try:
            with atomic_folder(out):
                while True:  # the limit reached inside the build
                    taken.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as error:
            assert error.errno == errno.EMFILE, error
        finally:
            for fd in taken:
                os.close(fd)

    pid, read = fork_child(body)
    with open(read, "rb") as pipe:
        said = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, said
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["posgen.store.writer.write_manifest", "posgen.card.render_card"])
def test_no_space_while_finishing_names_the_file_and_leaves_nothing(
    assert_clean_error, cli, recorded, tmp_path, monkeypatch, where
):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(where, no_space)
    out = tmp_path / "ds"
    result = cli("generate", "--out", out, "--task", "cot", "-q")
    with recorded("disk", f"ENOSPC in {where}"):
        line = assert_clean_error(result, 1, "No space left on device")
        assert line.startswith(f"error: writing {out}")
        assert where.endswith("card") or line.startswith(f"error: writing {out / 'posgen.json'}")
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["file in the way", "missing mount", "read-only folder"])
def test_a_target_that_cannot_be_used_is_refused_with_exit_2_naming_the_path(
    assert_clean_error, cli, recorded, tmp_path, case
):
    if case == "file in the way":
        (tmp_path / "blocker").write_text("")
        out, named = tmp_path / "blocker" / "ds", tmp_path / "blocker"
    elif case == "missing mount":
        out, named = Path("/proc/posgen-no-such/ds"), Path("/proc")
    else:
        if os.geteuid() == 0:
            pytest.skip("root may write into read-only folders")
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        out, named = locked / "ds", locked
    result = cli("generate", "--out", out, "--task", "cot", "-q")
    with recorded("disk", f"unwritable: {case}"):
        assert_clean_error(result, 2, f"{named} ", "nothing was written")
        assert not out.exists()


@pytest.mark.parametrize("command", ["generate", "train"])
def test_a_read_only_file_system_at_the_target_fails_the_run_with_exit_1(
    assert_clean_error, cli, recorded, tmp_path, monkeypatch, command
):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(posgen.cli.tempfile, "TemporaryFile", read_only)
    out = tmp_path / "out"
    train = ["--data", tmp_path, "--config", "cot", "--pe", "rope"]
    args = train if command == "train" else ["--task", "cot"]
    result = cli(command, "--out", out, *args, "-q")
    with recorded("disk", f"read-only file system: {command}"):
        assert_clean_error(result, 1, "read-only file system", "nothing was written")
        assert not out.exists()


def test_the_estimate_is_rows_times_length_times_bytes_and_each_rows_id():
    bench = default_benchmark(("cot",), modulus=300, train_size=7, val_size=3, test_size=2)
    estimate = estimate_benchmark(bench)
    probe = 2 * 256 * (2 + 4 + 2)  # at most a probed position (4 B) and answer per token
    ids = (7 + 3 + 2 + 2) * 12  # an id (8 B) and a list offset (4 B) a row
    files = 4 * 2**16  # each split's schema, footer and sidecars
    assert estimate.raw_bytes == (7 * 64 + 3 * 256 + 2 * 256) * 2 + probe + ids + files
    assert estimate.tokens == 7 * 64 + 3 * 256 + 2 * 256 + 2 * 256
    assert estimate.largest == "cot/probe: 2 rows x (256 tokens x 8 B + 12 B)"


def test_the_estimate_bounds_what_an_arrow_folder_of_short_rows_takes(tmp_path):
    """Short rows are mostly ids and offsets: 16 MB on disk against 4 MB of tokens."""
    bench = resolve_benchmark(None, ("recursive",), {
        "modulus": 256, "near": 2, "far": 1, "train_length": 4, "test_length": [4],
        "train_size": 100_000, "val_size": 10})  # fmt: skip
    write_dataset(bench, tmp_path / "ar", storage="arrow")
    held = sum(p.stat().st_size for p in (tmp_path / "ar").rglob("*.arrow"))
    assert held <= estimate_benchmark(bench).raw_bytes


HUGE = ["-m", "65536", "--train-size", "10000000000", "--train-length", "1048576",
        "--test-length", "1048576"]  # fmt: skip


def test_a_spec_too_big_for_any_disk_or_day_is_refused_with_the_estimate(
    cli, error_lines, recorded, tmp_path
):
    out = tmp_path / "ds"
    result = cli("generate", "--out", out, "--task", "cot", *HUGE)
    lines = error_lines(result.stderr)
    with recorded("resources", "larger than disk and day"):  # one line per problem: two
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert len(lines) == 2, result.stderr
        for fragment in (
            "10,000,000,000 rows x (1,048,576 tokens x 2 B + 12 B)",
            "are free on",
            "--force",
        ):
            assert fragment in lines[0], lines[0]
        assert "would take about" in lines[1] and "limit 24.0 h" in lines[1], lines[1]
        assert not out.exists()


SLOW = ["--task", "cot", "-m", "2048", "-j", "2", "--op", "far_perm"]


def test_a_slow_op_is_timed_so_a_spec_of_days_is_refused(cli, error_lines, tmp_path):
    """far_perm at m = 2048 makes about 15 k tokens/s: 64 G tokens are refused; a small spec
    is never timed; with j = 1 (fast once its permutations are built) 150 M rows pass."""
    out = tmp_path / "ds"
    result = cli("generate", "--out", out, *SLOW, "--train-size", "1000000000")
    (line,) = [line for line in error_lines(result.stderr) if "would take about" in line]
    assert result.exit_code == 2 and "cot's far_perm timed at" in line, result.stderr
    assert "pass --force to run it anyway" in line and not out.exists()
    small = resolve_benchmark(None, ("cot",), {"modulus": 2048, "far": 2, "op": "far_perm"})
    assert posgen.cli.generation_seconds(small, estimate_benchmark(small))[1] == ""
    fields = {"modulus": 2048, "far": 1, "op": "far_perm", "train_size": 150_000_000}
    fast = resolve_benchmark(None, ("cot",), fields)
    seconds, timed = posgen.cli.generation_seconds(fast, estimate_benchmark(fast))
    assert "far_perm timed at" in timed and seconds < 24 * 3600, timed


def test_the_paper_preset_is_not_refused(tmp_path):
    assert refusals(default_benchmark(), tmp_path / "ds") == []
