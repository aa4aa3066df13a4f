"""Concurrent runs and readers: nothing a live process owns is removed, readers see one dataset
(every wait is bounded only against a hang; no test asserts how long anything took)."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import posgen.store.dataset
import posgen.store.formats
import posgen.validate.run
from posgen import write_dataset
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.store import check_dataset, read_manifest
from posgen.store.dataset import Dataset, DatasetReplaced, load
from posgen.store.safety import OLD_TAG, TMP_TAG, leftovers, owned, recover, write_atomically
from posgen.validate import validate

DATASET = posgen.store.dataset
GUARD = 600  # seconds: only a hung process waits this long (a failure guard)

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def bench(seed: int) -> BenchmarkSpec:
    fields = dict(train_size=400, val_size=20, test_size=20, test_length=[96], seed=seed)
    return BenchmarkSpec(
        name="race", configs={t: TaskSpec(task=t, **fields) for t in ("cot", "recursive")}
    )


def spec_seed(root: Path) -> int:
    return read_manifest(root).configs["cot"].spec.seed


@contextlib.contextmanager
def owned_elsewhere(fork_child, path: Path) -> Iterator[None]:
    """While open, a forked process (its own PID and lock) owns ``path``."""
    wait, release = os.pipe()

    def hold() -> None:
        os.close(release)
        with owned(path):
            print("owned")
            os.read(wait, 1)  # until the test closes its end

    pid, said = fork_child(hold)
    os.close(wait)
    try:
        with open(said, "rb") as line:
            assert line.readline().strip() == b"owned"
        yield
    finally:
        os.close(release)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


OWNED = {  # whatever its name says, only the lock tells whether a run owns a leftover
    "owned build folder named with this process's PID": f"{TMP_TAG}{os.getpid()}-0badf00d",
    "owned build folder named with PID 1": f"{TMP_TAG}1-0badf00d",
    "owned build folder named with a PID no process has": f"{TMP_TAG}4000000-0badf00d",
    "owned build folder named with a random run id": f"{TMP_TAG}5f3a9c1e-0badf00d",
    # a dataset parked by a run between its two renames (the fallback commit)
    "parked dataset owned by a live run": f"{OLD_TAG}1a2b3c4d",
}


@pytest.mark.parametrize("case", list(OWNED))
def test_a_leftover_is_left_alone_while_its_owner_lives(fork_child, recorded, tmp_path, case):
    out, leftover = tmp_path / "ds", tmp_path / f".ds{OWNED[case]}"
    if case.startswith("parked"):
        write_dataset(bench(1), out)
        os.rename(out, leftover)
    else:
        leftover.mkdir()
    with owned_elsewhere(fork_child, leftover):
        notes, kept, absent = recover(out), leftover.is_dir(), not out.exists()
    with recorded("race", case):
        assert notes == [f"left {leftover} alone: a running process still owns it"]
        assert kept and absent
        if case.startswith("parked"):  # its owner died: restored
            why = "(a run died while replacing it)"
            assert recover(out) == [f"restored {out} from {leftover.name} {why}"]
            assert check_dataset(out) == []
        else:
            assert recover(out) == [f"removed leftover {leftover} of an interrupted run"]
            assert not leftover.exists()


OTHER_USERS = {  # a leftover another user's run left (in a shared /tmp) -> its name beside ds
    "build folder": f".ds{TMP_TAG}0badf00d",
    "parked dataset": f".ds{OLD_TAG}1a2b3c4d",
    "temporary file": ".ds.json.tmp-1-0badf00d",
}


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a leftover to another user needs root")
@pytest.mark.parametrize("case", list(OTHER_USERS))
def test_a_leftover_of_another_user_is_left_alone(recorded, tmp_path, case):
    # as a user in /tmp: the write failed ('writing ds.json failed: Permission denied', exit
    # 1) or was refused; as root: the other user's folder was removed or taken as the dataset
    leftover = tmp_path / OTHER_USERS[case]
    theirs = leftover if case == "temporary file" else leftover / "theirs"
    theirs.parent.mkdir(exist_ok=True)
    theirs.write_bytes(b"theirs")
    os.chown(leftover, 65534, 65534)
    if case == "temporary file":
        write_atomically(tmp_path / "ds.json", b"{}")
    else:
        notes = recover(tmp_path / "ds")
        write_dataset(bench(1), tmp_path / "ds")
    with recorded("race", f"another user's {case}"):
        said = f"left {leftover} alone: it belongs to another user"
        assert case == "temporary file" or notes == [said]
        assert leftover.stat().st_uid == 65534
        assert theirs.read_bytes() == b"theirs"


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
             "import os; print(os.getpid())"]  # fmt: skip
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=GUARD)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == "1"


HOLD_BUILD = """
import sys
from pathlib import Path
from posgen.store.safety import atomic_folder
with atomic_folder(Path(sys.argv[1]), overwrite=True) as build:
    (build / "posgen.json").write_text("{}")
    print(build, flush=True)
    sys.stdin.read()
print("committed", flush=True)
"""


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare --pid (root, Linux)")
def test_two_runs_that_are_both_pid_1_keep_their_own_build_folders(recorded, tmp_path):
    out = tmp_path / "ds"
    ns = ["unshare", "--pid", "--fork", "--mount-proc"]
    first = subprocess.Popen([*ns, sys.executable, "-c", HOLD_BUILD, str(out)], env=ENV,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    build = Path(first.stdout.readline().strip())
    second = subprocess.run(
        [*ns, sys.executable, "-m", "posgen", "generate", "--out", str(out), "-q",
         "--task", "cot", "--train-size", "50", "--val-size", "10", "--test-size", "10"],
        env=ENV, capture_output=True, text=True, timeout=GUARD,
    )  # fmt: skip
    kept, problems = build.is_dir(), check_dataset(out)  # while the first run still holds
    first.stdin.close()
    with recorded("race", "two runs, both PID 1 in their namespaces"):
        assert first.wait(timeout=GUARD) == 0
        assert first.stdout.read().strip() == "committed"
        assert kept
        assert second.returncode == 0, second.stderr
        assert problems == []
        assert leftovers(out) == []


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command (state, parent, ...); [] once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return []


def _children(pid: int) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and _stat(int(e))[1:2] == [str(pid)]]


def _removed_under(pid: int, folder: Path) -> list[str]:
    """Files or folders under ``folder`` that ``pid`` holds open although they were removed."""
    found = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                held = os.readlink(f"/proc/{pid}/fd/{fd}")
                if held.startswith(str(folder)) and held.endswith(" (deleted)"):
                    found.append(held)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return found


def _worker(pid: int) -> bool:  # not the resource tracker (it writes and owns nothing)
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        return b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


BIG = ["--task", "cot", "--task", "semirecursive", "-m", "97", "--train-size", "200000",
       "--val-size", "2000", "--test-size", "2000", "--shard-mb", "1",
       "--num-proc", "2"]  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("part", [None, "0/2"])
def test_sigkill_of_a_parallel_run_ends_its_workers_and_keeps_their_folder(
    recorded, kill_points, tmp_path, part
):
    out = tmp_path / "ds"
    extra = ["--part", part] if part else []
    command = [*kill_points, "worker writing", str(out), "0",
               "generate", "--out", str(out), "-q", *BIG, *extra]  # fmt: skip
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        held = [proc.stdout.readline().strip() for _ in range(2)]
        children, ends = _children(proc.pid), []
        for pid in children:  # a pidfd, opened while it lives: no PID reuse can fool it
            with contextlib.suppress(ProcessLookupError):
                ends.append(os.pidfd_open(pid))
    finally:
        proc.kill()  # whatever happened: a held run never goes on
        proc.wait(timeout=GUARD)
    assert held == ["worker writing"] * 2, held
    written = out.glob(".posgen-parts/data/*/.*.tmp-*") if part else (
        tmp_path.glob(f".ds{TMP_TAG}*/data/*/.*.tmp-*"))  # fmt: skip
    assert len(list(written)) == 2  # one open temporary shard per worker
    workers = [pid for pid in children if _worker(pid)]
    builds = list(tmp_path.glob(f".ds{TMP_TAG}*"))
    safe, notes = True, []
    if not part:  # the build folder is removed only once no worker lives
        notes += recover(out)  # a worker still writing keeps it
        lost = [held for pid in workers for b in builds for held in _removed_under(pid, b)]
        safe = not lost
        notes.append(f"removed while a worker held them: {lost}")
    for fd in ends:  # the workers end as their parent died (they are not our children)
        select.select([fd], [], [], GUARD)
        os.close(fd)
    ended = all((_stat(pid) or ["gone"])[0] in ("Z", "X", "gone") for pid in children)
    if not part:
        notes += recover(out)
    with recorded("race", f"SIGKILL of generate --num-proc 2{' --part ' + part if part else ''}"):
        assert ended, [(pid, _stat(pid)) for pid in children]
        assert safe, (notes, workers, children)
        assert part or leftovers(out) == [], notes


def _replace_during(monkeypatch, module, name: str, root: Path, times: int = 1) -> list[int]:
    """Its first ``times`` calls of ``module.name`` first replace ``root`` (a ``generate
    --overwrite`` landing mid-read): by the next seed's dataset, then by copies."""
    real = getattr(module, name)
    done: list[int] = []
    kept = root.with_name(f"{root.name}-kept")

    def replacing(*args, **kwargs):
        if len(done) < times:
            if done:
                shutil.copytree(kept, root.with_name("next"))
                os.rename(root, root.with_name("old"))
                os.rename(root.with_name("next"), root)
                shutil.rmtree(root.with_name("old"))
            else:
                if times > 1:
                    shutil.copytree(root, kept)
                write_dataset(bench(spec_seed(root) + 1), root, overwrite=True)
            done.append(spec_seed(root))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, replacing)
    return done


def _validated(root: Path) -> bool:
    report = validate(root)
    return report.ok or [c.message for c in report.checks if not c.ok]


def _loaded_whole(root: Path) -> bool:
    loaded = load(root, "cot")  # replaced between the check and the load
    return loaded["train"]["tokens"][:5] == load(root, "cot")["train"]["tokens"][:5]


READS = {
    "validate, replaced at the first file hash": (DATASET, "sha256_file", _validated),
    "validate, replaced while streaming tokens": (posgen.validate.run, "decode_batch", _validated),
    "integrity check, replaced at the first file hash": (
        DATASET, "sha256_file", lambda root: check_dataset(root) == []),
    "load, replaced between the check and the load": (
        type(posgen.store.formats.FORMATS["parquet"]), "load_files", _loaded_whole),
}  # fmt: skip


@pytest.mark.parametrize("case", list(READS))
def test_a_read_during_a_replace_sees_one_whole_dataset(recorded, tmp_path, monkeypatch, case):
    root = tmp_path / "ds"
    write_dataset(bench(1), root)
    module, name, read = READS[case]
    replaced = _replace_during(monkeypatch, module, name, root)
    result = read(root)
    with recorded("race", case):
        assert replaced == [2]
        assert result is True, result
        assert spec_seed(root) == 2


def test_a_handle_kept_open_reads_the_dataset_that_replaced_its_folder(tmp_path):
    """A folder's inode is never reused while a handle lives: each read is of the newest."""
    root = tmp_path / "ds"
    write_dataset(bench(1), root)
    handle = Dataset.open(root)
    for seed in range(2, 8):
        write_dataset(bench(seed), root, overwrite=True)
        split = handle.split("cot", "test")
        assert split.spec.seed == seed
        assert (split.tokens == Dataset.open(root).split("cot", "test").tokens).all()


def _one_config(task: str) -> BenchmarkSpec:
    fields = dict(train_size=16, val_size=4, test_size=4, test_length=[96])
    return BenchmarkSpec(name="race", configs={task: TaskSpec(task=task, **fields)})


# what a handle answers -> the task of the config it describes
ANSWERS = {
    "configs": lambda handle: handle.configs[0],
    "spec(None)": lambda handle: handle.spec(None).task,
    "resolve_config(None)": lambda handle: handle.resolve_config(None),
    "manifest": lambda handle: next(iter(handle.manifest.configs)),
    "split(None).spec": lambda handle: handle.split(None).spec.task,
    "probe(None).spec": lambda handle: handle.probe(None).spec.task,
    "verify()": lambda handle: next(iter(handle.verify().configs)),
}


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_every_answer_of_a_handle_describes_the_folder_that_replaced_its_own(tmp_path, answer):
    """A cot folder replaced by a recursive one: the handle answers recursive, whole, however
    it is asked first (its spec is never cot while its split rows are recursive)."""
    root = tmp_path / "ds"
    write_dataset(_one_config("cot"), root)
    handle = Dataset.open(root)
    assert handle.spec(None).task == "cot"
    write_dataset(_one_config("recursive"), root, overwrite=True)
    assert ANSWERS[answer](handle) == "recursive"
    rows = handle.split(None)
    assert (handle.spec(None), handle.configs) == (rows.spec, ["recursive"])


def test_a_folder_replaced_during_every_read_is_one_error_line(
    assert_clean_error, cli, recorded, tmp_path, monkeypatch
):
    root = tmp_path / "ds"
    write_dataset(bench(1), root)
    _replace_during(monkeypatch, DATASET, "sha256_file", root, times=100)
    with pytest.raises(DatasetReplaced):
        validate(root)
    with recorded("race", "validate, replaced during every read"):
        assert_clean_error(cli("validate", root), 1, "was replaced")


WRITER = """
import json, sys
from pathlib import Path
from posgen import write_dataset
from posgen.spec import BenchmarkSpec
body = json.loads(sys.argv[3])  # bench(1) of this module
print("ready", flush=True)  # imported: the reader starts now, not while this imports
for seed in range(2, 2 + int(sys.argv[2])):
    for config in body["configs"].values():
        config["seed"] = seed
    write_dataset(BenchmarkSpec.model_validate(body), Path(sys.argv[1]), overwrite=True)
"""


def test_validate_beside_a_real_writer_never_reports_a_false_failure(recorded, tmp_path):
    root = tmp_path / "ds"
    write_dataset(bench(1), root)
    spec = bench(1).model_dump_json()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root), "3", spec], env=ENV,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    failures, reads = [], 0
    try:
        assert writer.stdout.readline().strip() == "ready"
        while writer.poll() is None or reads == 0:
            try:
                report = validate(root)
            except DatasetReplaced:
                continue  # said so, in one line: not a false failure
            reads += 1
            failures += [c.message for c in report.checks if not c.ok]
    finally:
        writer.wait(timeout=GUARD)
    with recorded("race", "validate beside a real generate --overwrite loop"):
        assert writer.returncode == 0
        assert not failures, failures[:3]
        assert check_dataset(root) == []
