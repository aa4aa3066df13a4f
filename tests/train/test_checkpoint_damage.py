"""Damaged checkpoints (issue 27, class 6): named with the command that starts over (exit 1),
never resumed, changed or removed; following the command trains the run anew."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import posgen.signals  # noqa: E402
from posgen.train.job import CHECKPOINT, PROGRESS, TRAILER_BYTES, TRAILER_TAG  # noqa: E402


@pytest.fixture(scope="module")
def stopped(train_tiny, tmp_path_factory) -> dict[str, Path]:
    """The work folder (a checkpoint) of a run stopped after step 1; the run trained unstopped."""
    base = tmp_path_factory.mktemp("checkpoints")
    reference = base / "reference"
    assert train_tiny("rope", reference).exit_code == 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(posgen.signals.HOOK_ENV, "step:1:SIGTERM")
        result = train_tiny("rope", base / "run")
    assert result.exit_code == 143, result.output
    work = base / ".run.posgen-resume"
    assert (work / CHECKPOINT).is_file()
    return {"work": work, "reference": reference}


def _flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :]


def _digit_changed(raw: bytes) -> bytes:
    at = len(raw) - TRAILER_BYTES + len(TRAILER_TAG)  # the sha256's first hex digit
    return raw[:at] + (b"0" if raw[at : at + 1] != b"0" else b"1") + raw[at + 1 :]


def _checksummed(payload: bytes) -> bytes:
    return (
        payload
        + TRAILER_TAG
        + f"{hashlib.sha256(payload).hexdigest()} {len(payload):016d}\n".encode()
    )


def _valid_but_not_torch(raw: bytes) -> bytes:
    return _checksummed(b"not a torch file at all" * 10)


def _saved_list(raw: bytes) -> bytes:
    buffer = io.BytesIO()
    torch.save([1, 2], buffer)
    return _checksummed(buffer.getvalue())


def _resaved(change):
    """The checkpoint's state changed by ``change(state)`` and saved with its checksum: whole
    and checked, but of another layout (another version) or standing past the run's end."""

    def damage(path: Path, intact: Path) -> None:
        state = torch.load(io.BytesIO(intact.read_bytes()[:-TRAILER_BYTES]), weights_only=True)
        change(state)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path.write_bytes(_checksummed(buffer.getvalue()))

    return damage


def _bytes(change):
    """A damage of the checkpoint's bytes: ``change(raw)`` is what it then holds."""
    return lambda path, intact: path.write_bytes(change(intact.read_bytes()))


DAMAGE = {  # what stands at checkpoint.pt (``intact``: a good copy), a fragment of the line
    "empty": (_bytes(lambda raw: b""), "is empty"),
    "truncated to half": (_bytes(lambda raw: raw[: len(raw) // 2]), "carries no checksum"),
    "last byte cut": (_bytes(lambda raw: raw[:-1]), "carries no checksum"),
    "one weight byte flipped": (_bytes(lambda raw: _flip(raw, len(raw) // 2)), "does not match"),
    "first byte flipped": (_bytes(lambda raw: _flip(raw, 0)), "does not match"),
    "checksum altered": (_bytes(lambda raw: _flip(raw, len(raw) - 20)), "does not match"),
    "checksum's first digit changed": (_bytes(_digit_changed), "does not match the sha256"),
    "checksum line removed": (_bytes(lambda raw: raw[:-TRAILER_BYTES]), "carries no checksum"),
    "random bytes": (_bytes(lambda raw: os.urandom(len(raw))), "carries no checksum"),
    "checked but not a checkpoint": (_bytes(_valid_but_not_torch), "cannot be read"),
    "checked, a list": (_bytes(_saved_list), "holds a list, not a checkpoint"),
    "a byte dropped mid-file": (_bytes(lambda raw: raw[:100] + raw[101:]), "is not whole ("),
    "a folder": (lambda path, intact: path.mkdir(), "is not a file"),
    "a pipe": (lambda path, intact: os.mkfifo(path), "is not a file"),  # a read waits for good
    "a link to an intact copy": (lambda path, intact: path.symlink_to(intact), "is not a file"),
    "checked, without its position": (_resaved(lambda s: s.pop("position")), "does not fit"),
    "checked, past the run's last step": (
        _resaved(lambda s: s["position"].update(step=10**9)),
        "does not fit this run",
    ),
    "checked, its step a float": (
        _resaved(lambda s: s["position"].update(step=1.5)),
        "its step: missing or no whole number",
    ),
    "checked, its log no JSON": (
        _resaved(lambda s: s["position"].update(log="x")),
        "does not fit this run",
    ),
    "checked, without the optimizer's state": (
        _resaved(lambda s: s["optimizer"].clear()),
        "does not fit this run",
    ),
    "checked, a weight of another shape": (
        _resaved(lambda s: s["model"].update({"lm_head.weight": torch.zeros(3)})),
        "does not fit",
    ),
}


def _found(path: Path) -> tuple[int, int, bytes | None]:
    """What stands at ``path``: its mode, inode and, for a file, its bytes (never followed)."""
    found = path.lstat()
    raw = path.read_bytes() if stat.S_ISREG(found.st_mode) else None
    return found.st_mode, found.st_ino, raw


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_named_with_the_command_that_starts_over(
    assert_clean_error, train_tiny, recorded, tmp_path, stopped, case
):
    damage, fragment = DAMAGE[case]
    work = tmp_path / ".run.posgen-resume"
    shutil.copytree(stopped["work"], work)
    checkpoint = work / CHECKPOINT
    checkpoint.rename(tmp_path / "intact.pt")
    damage(checkpoint, tmp_path / "intact.pt")
    before = _found(checkpoint)
    result = train_tiny("rope", tmp_path / "run")
    with recorded("damage", f"issue 27 class 6: checkpoint {case}"):
        line = assert_clean_error(result, 1, str(checkpoint), fragment, "not resumed")
        assert f"rm -r {work}" in line
        assert _found(checkpoint) == before
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damaged", [True, False], ids=["damaged, started over", "intact"])
def test_a_rerun_writes_what_a_run_never_stopped_writes(train_tiny, tmp_path, stopped, damaged):
    """Resumed from an intact checkpoint, or anew once a damaged one is removed as told."""
    work = tmp_path / ".run.posgen-resume"
    shutil.copytree(stopped["work"], work)
    out = tmp_path / "run"
    if damaged:
        (work / CHECKPOINT).write_bytes(b"")
        assert train_tiny("rope", out).exit_code == 1
        shutil.rmtree(work)  # what the error line says to run
    result = train_tiny("rope", out)
    assert result.exit_code == 0, result.output
    reference = stopped["reference"] / "predictions.parquet"
    assert (out / "predictions.parquet").read_bytes() == reference.read_bytes()
    assert not work.exists()


PROGRESS_NOT_A_FILE = {  # what stands at progress.json instead of a file
    "a pipe": lambda path, outside: os.mkfifo(path),  # reading or writing it waited for good
    "a link to a file outside": lambda path, outside: path.symlink_to(outside),  # replaced
}


@pytest.mark.parametrize("case", sorted(PROGRESS_NOT_A_FILE))
def test_a_progress_file_that_is_no_file_is_replaced_never_followed_or_waited_on(
    train_tiny, tmp_path, stopped, case
):
    """No progress: the checkpoint resumes, and progress.json is replaced where it stands."""
    work, outside = tmp_path / ".run.posgen-resume", tmp_path / "outside.json"
    shutil.copytree(stopped["work"], work)
    (work / PROGRESS).unlink()
    outside.write_bytes(b'{"mine": 1}\n')
    PROGRESS_NOT_A_FILE[case](work / PROGRESS, outside)
    done = threading.Event()

    def release() -> None:  # a posgen waiting to open the pipe (to read or write) goes on
        while not done.is_set():
            with contextlib.suppress(OSError):  # a link (O_NOFOLLOW), or nothing there
                os.close(os.open(work / PROGRESS, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW))
            done.wait(0.01)

    watcher = threading.Thread(target=release, daemon=True)
    watcher.start()
    try:
        result = train_tiny("rope", tmp_path / "run")
    finally:
        done.set()
        watcher.join()
    assert result.exit_code == 0, result.output
    assert outside.read_bytes() == b'{"mine": 1}\n'
    reference = stopped["reference"] / "predictions.parquet"
    assert (tmp_path / "run" / "predictions.parquet").read_bytes() == reference.read_bytes()
