"""The local executor of ``posgen sweep``: N worker processes on this machine.

Each training runs as its own process (``python -m posgen.train.sweep SWEEP JOB``) with one
torch thread, or, when GPUs are present, on one GPU through ``CUDA_VISIBLE_DEVICES``
(worker slot ``i`` gets GPU ``i mod #GPUs``). Its output goes to ``SWEEP/logs/<job>.log``.

A signal to the sweep (SIGINT, SIGTERM, SIGHUP) is passed to every worker: each checkpoints
and exits, no new training starts, and the sweep ends with that signal's exit status. The
kernel sends SIGTERM to the workers if the sweep itself dies (Linux ``PR_SET_PDEATHSIG``),
so they checkpoint then too. A worker that dies without a word (SIGKILL, the OOM killer)
gets a failure record naming the signal; the next sweep resumes it from its checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType

from posgen.store.safety import die_with_parent
from posgen.train.grid import JobSpec
from posgen.train.sweep import Sweep, label, signal_name

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Outcome:
    """What a local sweep did: trainings done, failed (with reasons), stopped by a signal."""

    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: list[str] = field(default_factory=list)
    signal: int | None = None
    seconds: float = 0.0


def visible_gpus() -> list[str]:
    """GPU ids workers may be given: ``CUDA_VISIBLE_DEVICES`` if set, else torch's count."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu for gpu in listed.split(",") if gpu.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def run_local(
    sweep: Sweep,
    jobs: list[JobSpec],
    workers: int,
    gpus: list[str],
    say: Callable[[str], None],
) -> Outcome:
    """Run ``jobs`` in at most ``workers`` processes at once; ``say`` gets one line per
    finished training."""
    sweep.logs.mkdir(parents=True, exist_ok=True)
    outcome = Outcome()
    pending = deque(jobs)
    running: dict[int, tuple[subprocess.Popen[bytes], JobSpec, int]] = {}
    free = list(range(workers))[::-1]
    started = time.perf_counter()

    def forward(signum: int, frame: FrameType | None) -> None:
        outcome.signal = outcome.signal or signum
        for process, _, _ in running.values():
            process.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        while (pending and outcome.signal is None) or running:
            while pending and free and outcome.signal is None:
                job, slot = pending.popleft(), free.pop()
                process = _start(sweep, job, slot, gpus)
                running[process.pid] = (process, job, slot)
            if not running:
                break
            pid, status = _wait_any()
            if pid not in running:
                continue
            process, job, slot = running.pop(pid)
            process.returncode = os.waitstatus_to_exitcode(status)
            free.append(slot)
            _settle(sweep, job, process.returncode, outcome, say)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _wait_any(poll: float = 0.05) -> tuple[int, int]:
    """``os.waitpid(-1, 0)`` that lets signal handlers run while it waits.

    A signal sent to this process may be delivered to any of its threads (torch and
    others start some); only the main thread runs Python handlers, and a blocking
    ``waitpid`` there is not interrupted by a signal another thread took. Polling keeps
    the handler's delay under ``poll`` seconds.
    """
    while True:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            return pid, status
        time.sleep(poll)


def _start(sweep: Sweep, job: JobSpec, slot: int, gpus: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    command = [sys.executable, "-m", "posgen.train.sweep", str(sweep.root), job.key, "1"]
    with open(sweep.logs / f"{job.key}.log", "ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # no locks held in other threads; the C library is loaded already
            preexec_fn=partial(die_with_parent, os.getpid(), signal.SIGTERM),
        )


def _settle(
    sweep: Sweep, job: JobSpec, code: int, outcome: Outcome, say: Callable[[str], None]
) -> None:
    name = label(job)
    if code == 0:
        outcome.done.append(job.key)
        say(f"{name}: done")
        return
    stopped = code > 128 or outcome.signal is not None  # a signal, ours or its own
    if stopped and code != -signal.SIGKILL:
        outcome.interrupted.append(job.key)
        say(f"{name}: stopped by {signal_name(code)}; a rerun resumes it from its last checkpoint")
        return
    if code < 0:
        sweep.record_failure(job.key, f"killed by {signal_name(code)}")
    outcome.failed[job.key] = _last_error(sweep, job)
    say(f"{name}: failed: {outcome.failed[job.key]}")


def _last_error(sweep: Sweep, job: JobSpec) -> str:
    path: Path = sweep.failure(job.key)
    try:
        return path.read_text(errors="replace").strip() or "failed"
    except OSError:
        return f"failed (see {sweep.logs / (job.key + '.log')})"
