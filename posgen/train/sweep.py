"""A sweep folder: the runs of a grid, their trainings, their state, and one training's job.

Layout (``posgen sweep GRID --out SWEEP``)::

    SWEEP/sweep.json          the runs (every grid swept into this folder), wall seconds
    SWEEP/runs/<run hash>/    finished run folders (``posgen results SWEEP/runs``)
    SWEEP/work/<job hash>/    an unfinished training: its checkpoint; locked while it runs
    SWEEP/failed/<job hash>   the one-line reason of a training's last failure
    SWEEP/discarded/<run hash>.N  run folders set aside: damaged, incomplete or another run's
    SWEEP/logs/               each training's output (local) or submitit's files (Slurm)

Workers (:func:`run_local`'s processes, :func:`submit`'s array) run :func:`run_job`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal
from unittest.mock import patch

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from posgen import signals
from posgen.errors import UsageError, error_exit, shown
from posgen.signals import Interrupted
from posgen.spec import read_bounded
from posgen.store.safety import claim, die_with_parent, exclusive, owner_alive, write_atomically
from posgen.train import FILES
from posgen.train.config import JobSpec, RunSpec, SlurmSettings, jobs_of, preset, run_settings
from posgen.train.job import read_progress
from posgen.train.run_record import DamagedRun, read_run

RECORD = "sweep.json"
MAX_RECORD_BYTES = 256 << 20  # a run takes about 700 bytes: ~380,000 runs
MAX_REASON_CHARS = 500
PREEMPTION = signal.SIGUSR2  # submitit's preemption and time-out signal (it requeues the job)

State = Literal["done", "running", "failed", "waiting"]


class SweepError(UsageError, ValueError):
    """A sweep folder that cannot be used (exit status 2)."""


class SweepRecord(BaseModel):
    """``sweep.json``: the runs of a sweep folder and the wall time its local workers took."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = 1
    runs: list[RunSpec] = Field(default_factory=list)
    wall_seconds: float = Field(0.0, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _consistent(self) -> SweepRecord:
        """Each run once, and the runs of one training alike in all but their encoding."""
        seen: dict[str, int] = {}
        shared: dict[str, tuple[int, tuple[Any, ...]]] = {}
        for index, run in enumerate(self.runs):
            if run.key in seen:
                raise ValueError(
                    f"runs.{index}: run {run.key} is listed again (first as runs.{seen[run.key]})"
                )
            seen[run.key] = index
            trained = (run.data, run.spec_id, run.config, run.preset, run.train, run.seed)
            first, alike = shared.setdefault(run.job, (index, trained))
            if alike != trained:
                raise ValueError(
                    f"runs.{index}: training {run.job} is shared with runs.{first}, which "
                    "trains other data, settings or seed"
                )
        return self


@dataclass(frozen=True)
class Sweep:
    """The paths of a sweep folder, and what its runs' folders hold."""

    root: Path

    @property
    def record(self) -> Path:
        return self.root / RECORD

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def run_folder(self, run: RunSpec) -> Path:
        return self.root / run.folder

    def work(self, job: str) -> Path:
        return self.root / "work" / job

    def failure(self, job: str) -> Path:
        return self.root / "failed" / job

    def read(self) -> SweepRecord:
        """``sweep.json``; :class:`SweepError` naming it when missing or damaged."""
        try:
            raw = read_bounded(self.record, MAX_RECORD_BYTES)
        except FileNotFoundError:
            raise SweepError(f"{self.root} is not a sweep folder (no {RECORD})") from None
        if len(raw) > MAX_RECORD_BYTES:
            raise SweepError(f"{self.record} is larger than {MAX_RECORD_BYTES:,} bytes")
        return self._parse(raw, "damaged")

    def _parse(self, raw: bytes, problem: str) -> SweepRecord:
        """``raw`` as a record; :class:`SweepError` ``SWEEP/sweep.json: PROBLEM (where: why)``."""
        try:
            return SweepRecord.model_validate_json(raw)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            where = ".".join(map(str, first["loc"]))
            message = str(first["msg"]).removeprefix("Value error, ")
            if first["type"] == "string_pattern_mismatch":
                message = "not a hash of 16 hex digits (its keys name folders of the sweep)"
            detail = f"{where}: {message}" if where else message
            raise SweepError(f"{self.record}: {problem} ({shown(detail, 300)})") from None

    @contextmanager
    def updating(self) -> Iterator[SweepRecord]:
        """The record, locked against other sweeps of this folder, checked and written back."""
        self.root.mkdir(parents=True, exist_ok=True)
        with exclusive(self.root):
            record = self.read() if self.record.exists() else SweepRecord()
            yield record
            raw = (record.model_dump_json(indent=1) + "\n").encode()
            self._parse(raw, "not updated: the change would leave it inconsistent")
            write_atomically(self.record, raw)

    def add(self, runs: list[RunSpec]) -> None:
        """Record ``runs`` once (refusing an edited record); their trainings' recorded runs then
        read their data where the grid says it lies now."""
        unhashed = {"data", "pe_request"}  # where the data lies, how the encoding was spelled
        with self.updating() as record:
            known = {run.key: run.model_dump(exclude=unhashed) for run in record.runs}
            named = {run.key: run.pe_request.name for run in record.runs}
            for run in runs:
                if run.key in known and known[run.key] != run.model_dump(exclude=unhashed):
                    why = "the file was edited"
                    if named[run.key] != run.pe_request.name:  # two plugins of one label
                        why = f"its encoding {run.pe!r} is {named[run.key]}, the grid's is "
                        why += f"{run.pe_request.name}: give one plugin another name"
                    raise SweepError(
                        f"{self.record}: run {run.key} records other settings than the grid's "
                        f"run of that hash ({why}); restore it or sweep into a new folder"
                    )
            data = {run.job: run.data for run in runs}
            record.runs = [
                run.model_copy(update={"data": data.get(run.job, run.data)}) for run in record.runs
            ]
            record.runs += [run for run in runs if run.key not in known]

    def not_done(self, run: RunSpec) -> str | None:
        """Why ``run`` is not done (None when it is): ``missing``, or what is wrong with its
        folder (a run file missing or damaged, or another run's)."""
        folder = self.run_folder(run)
        if not os.path.lexists(folder):
            return "missing"
        if folder.is_symlink() or not folder.is_dir():
            return f"{folder} is not a run folder (a link or a file)"
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            return f"{folder} lacks {', '.join(missing)}"
        try:
            record = read_run(folder)
        except DamagedRun as error:
            return str(error)
        facts = {
            "dataset": (Path(record.data.folder).name, run.dataset),
            "spec": (record.spec.spec_id, run.spec_id),
            "config": (record.data.config, run.config),
            "encoding": (record.position_encoding.label, run.pe),
            "preset": (record.preset, run.preset),
            "seed": (record.seed, run.seed),
        }
        for name, (found, wanted) in facts.items():
            if found != wanted:
                other = f"{name} {shown(found, 60)}, not {shown(wanted, 60)}"
                return f"{folder} holds another run ({other}): a copy"
        if run_settings(record.train) != run.train:
            return f"{folder} holds another run (other training settings): a copy"
        return None

    def done(self, runs: list[RunSpec]) -> bool:
        return all(self.not_done(run) is None for run in runs)

    def set_aside(self, runs: list[RunSpec]) -> list[str]:
        """Move existing run folders that are not done (and no live worker holds) into
        ``SWEEP/discarded/<key>.N`` so they train again; one line each."""
        lines = []
        with exclusive(self.root):
            for run in runs:
                why = self.not_done(run)
                if why in (None, "missing") or owner_alive(self.work(run.job)):
                    continue
                (self.root / "discarded").mkdir(exist_ok=True)
                number = 1
                while os.path.lexists(target := self.root / "discarded" / f"{run.key}.{number}"):
                    number += 1
                os.rename(self.run_folder(run), target)
                lines.append(f"{why}; moved to {target}, and {label([run])} is trained again")
        return lines

    def unfinished(self, runs: list[RunSpec]) -> list[JobSpec]:
        """Trainings with a run not done that no live worker runs now."""
        return [
            job
            for job in jobs_of(runs)
            if not self.done(job.runs) and not owner_alive(self.work(job.key))
        ]

    def tidy(self, runs: list[RunSpec]) -> None:
        """Remove the work folders of finished trainings that no live worker holds."""
        for job in jobs_of(runs):
            work = self.work(job.key)
            if work.exists() and self.done(job.runs):
                with claim(work) as state:
                    if state == "claimed":
                        shutil.rmtree(work, ignore_errors=True)

    def record_failure(self, job: str, reason: str) -> None:
        line = shown(" ".join(reason.split()), MAX_REASON_CHARS)
        write_atomically(self.failure(job), (line + "\n").encode())

    def failure_reason(self, job: str) -> str:
        """The recorded reason of a training's last failure (one line)."""
        try:
            raw = read_bounded(self.failure(job), 4 * MAX_REASON_CHARS)  # a pipe: not waited on
            text = raw.decode("utf-8", "replace")
        except OSError as error:
            return f"(failure record unreadable: {error.strerror})"
        return shown(" ".join(text.split()), MAX_REASON_CHARS) or "(no reason recorded)"


def label(runs: list[RunSpec]) -> str:
    """Runs of one training as people read them: ``posgen-v1/cot rope+yarn seed 42 (cpu)``."""
    first = runs[0]
    pes = "+".join(run.pe for run in runs)
    return f"{first.dataset}/{first.config} {pes} seed {first.seed} ({first.preset})"


@dataclass(frozen=True)
class RunState:
    """Where one run of a sweep stands, with a one-line detail."""

    run: RunSpec
    state: State
    detail: str = ""


def run_states(sweep: Sweep) -> list[RunState]:
    """Each recorded run: done, running (a live lock), failed (with its reason) or waiting.
    The lock is probed first: a worker writes its run folder or failure before it lets go."""
    states = []
    for run in sweep.read().runs:
        work = sweep.work(run.job)
        alive = owner_alive(work)
        progress = read_progress(work) or {}
        where = f"epoch {progress.get('epoch')}, step {progress.get('step')}" if progress else ""
        if progress.get("done"):
            where = "the final write (training done)"
        why = sweep.not_done(run)
        if why is None:
            states.append(RunState(run, "done", run.folder))
        elif alive or alive is None:
            note = " (no file locks here: or a worker that died)" if alive is None else ""
            states.append(RunState(run, "running", (where or "before its first checkpoint") + note))
        elif sweep.failure(run.job).is_file():
            states.append(RunState(run, "failed", sweep.failure_reason(run.job)))
        elif why != "missing":
            states.append(RunState(run, "waiting", f"{why}; a rerun sets it aside and trains it"))
        else:
            states.append(RunState(run, "waiting", f"resumes at {where}" if where else ""))
    return states


def run_job(root: Path, job_key: str, threads: int = 1) -> list[str]:
    """Run one training of the sweep at ``root``: the run folders it wrote; a failure is
    recorded and raised."""
    sweep = Sweep(Path(root))
    runs = [run for run in sweep.read().runs if run.job == job_key]
    if not runs:
        raise SweepError(f"{sweep.record} has no training {job_key}")
    first = runs[0]
    previous = signals.install()  # before torch's import (seconds): a Ctrl-C then is one line
    # submitit's preemption signal stops the loop like SIGTERM; its own handler then requeues
    submitit_handler = (
        signal.signal(PREEMPTION, signal.getsignal(signal.SIGTERM)) if previous else None
    )
    try:
        signals.point("import")
        import torch  # after the checks: a worker given a wrong folder says so at once

        from posgen.train.job import train_runs

        torch.set_num_threads(threads)
        sweep.failure(job_key).unlink(missing_ok=True)
        written = train_runs(
            Path(first.data),
            first.config,
            [run.pe_request for run in runs],
            preset(first.preset, **first.train),
            first.seed,
            [sweep.run_folder(run) for run in runs],
            first.preset,
            work=sweep.work(job_key),
            key=job_key,
            name=label(runs),
            restart_other=True,  # a grid that grew: its new encodings need the whole training
        )
    except Interrupted as stop:
        if stop.signum == PREEMPTION and callable(submitit_handler):
            submitit_handler(stop.signum, None)  # the checkpoint is saved: requeue and exit
        raise
    except Exception as error:
        sweep.record_failure(job_key, "; ".join(error_exit(error)[0]))
        raise
    finally:
        signals.restore(previous)
        if previous:
            signal.signal(PREEMPTION, submitit_handler)
    return [summary["out"] for summary in written]


def job_main(argv: list[str]) -> int:
    """``python -m posgen.train.sweep SWEEP JOB``: exit 0 done, 1 failed, 128 + signal."""
    root, job_key = Path(argv[0]), argv[1]
    started = time.perf_counter()
    try:
        written = run_job(root, job_key)
    except (Interrupted, Exception) as error:
        if isinstance(error, Interrupted) and error.left is None:
            kept = read_progress(Sweep(root).work(job_key)) is not None
            error.left = "checkpoint kept" if kept else "no checkpoint yet: a rerun starts it over"
        lines, code = error_exit(error)
        for line in lines:
            print(f"error: {job_key}: {line}", file=sys.stderr)
        return code
    for folder in written:
        print(f"{folder}: written ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


def signal_name(code: int) -> str:
    """``SIGKILL`` for an exit status -9 or 137 (a real-time signal by its number).

    >>> signal_name(-9), signal_name(137), signal_name(-40)
    ('SIGKILL', 'SIGKILL', 'signal 40')
    """
    number = -code if code < 0 else code - 128
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass
class Outcome:
    """What a local sweep did (``resumable``: trainings stopped that left a checkpoint)."""

    failed: dict[str, str] = field(default_factory=dict)
    interrupted: list[str] = field(default_factory=list)
    resumable: list[str] = field(default_factory=list)
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
    sweep: Sweep, jobs: list[JobSpec], workers: int, gpus: list[str], say: Callable[[str], None]
) -> Outcome:
    """Run ``jobs`` in at most ``workers`` processes (slot ``i`` on ``gpus[i % len(gpus)]``),
    one line to ``say`` per training; a signal is passed on to every worker."""
    sweep.logs.mkdir(parents=True, exist_ok=True)
    outcome = Outcome()
    pending = deque(jobs)
    running: dict[int, tuple[subprocess.Popen[bytes], JobSpec, int]] = {}
    free = list(range(workers))[::-1]
    started = time.perf_counter()

    while (pending and outcome.signal is None) or running:
        held = signals.deferred if outcome.signal is None else nullcontext
        try:
            with held():
                while pending and free and outcome.signal is None:
                    job, slot = pending.popleft(), free.pop()
                    process = _start(sweep, job, slot, gpus)
                    running[process.pid] = (process, job, slot)
            if not running:
                break
            pid, status = _wait_any()
            with held():
                if pid not in running:
                    continue
                process, job, slot = running.pop(pid)
                process.returncode = os.waitstatus_to_exitcode(status)
                free.append(slot)
                _settle(sweep, job, process.returncode, outcome, say)
        except Interrupted as stop:
            if outcome.signal is None:
                outcome.signal = stop.signum
                for process, _, _ in running.values():
                    process.send_signal(stop.signum)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _wait_any(poll: float = 0.05) -> tuple[int, int]:
    """``os.waitpid(-1, 0)`` that lets handlers run (another thread may take the signal)."""
    while True:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            return pid, status
        time.sleep(poll)


def import_env() -> dict[str, str]:
    """Environment for a worker to import this posgen, never a ``posgen/`` in its cwd."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONSAFEPATH": "1", "PYTHONPATH": path}


def _start(sweep: Sweep, job: JobSpec, slot: int, gpus: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, **import_env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    command = [sys.executable, "-m", "posgen.train.sweep", str(sweep.root), job.key]
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
    name = label(job.runs)
    if code == 0 and sweep.done(job.runs):
        say(f"{name}: done")
        return
    if code == 0:  # a worker that exited without its run folders (something ended it early)
        sweep.record_failure(job.key, "its worker exited 0 without writing its run folders")
    stopped = code > 128 or outcome.signal is not None  # a signal, ours or its own
    if stopped and code != -signal.SIGKILL:
        outcome.interrupted.append(job.key)
        if read_progress(sweep.work(job.key)) is not None:
            outcome.resumable.append(job.key)
            say(f"{name}: stopped by {signal_name(code)}; a rerun resumes it from its checkpoint")
        else:
            say(f"{name}: stopped by {signal_name(code)} before its first checkpoint; a rerun "
                "starts it over")  # fmt: skip
        return
    if code < 0:
        sweep.record_failure(job.key, f"killed by {signal_name(code)}")
    if sweep.failure(job.key).is_file():
        reason = sweep.failure_reason(job.key)
    else:
        reason = f"failed (see {sweep.logs / (job.key + '.log')})"
    outcome.failed[job.key] = reason
    say(f"{name}: failed: {reason}")


try:
    from submitit.helpers import Checkpointable
except ImportError:  # the extra is missing: submit() says so before anything uses this
    Checkpointable = object


def require_submitit(executor: str = "slurm") -> Any:
    """The ``submitit`` module, or :class:`UsageError` with the install hint."""
    try:
        import submitit
    except ImportError:
        hint = f"--executor {executor} needs submitit: pip install 'posgen[slurm]'"
        raise UsageError(hint) from None
    return submitit


class SweepJob(Checkpointable):  # type: ignore[misc,valid-type]
    """One training of a sweep for submitit; requeued as it is (it resumes)."""

    def __init__(self, root: str, threads: int) -> None:
        self.root, self.threads = root, threads

    def __call__(self, job_key: str) -> list[str]:
        return run_job(Path(self.root), job_key, self.threads)


def submit(
    sweep: Sweep, jobs: list[JobSpec], settings: SlurmSettings, cluster: str = "slurm"
) -> list[Any]:
    """Submit ``jobs`` as one array; returns submitit's job objects (empty when none)."""
    submitit = require_submitit("submitit-local" if cluster == "local" else "slurm")
    if not jobs:
        return []
    executor = submitit.AutoExecutor(folder=sweep.logs / "slurm", cluster=cluster)
    executor.update_parameters(
        name=f"posgen-sweep-{sweep.root.name}",
        timeout_min=settings.time_min,
        mem_gb=settings.mem_gb,
        cpus_per_task=settings.cpus,
        gpus_per_node=settings.gpus,
        tasks_per_node=1,
        slurm_array_parallelism=settings.max_parallel,
        **{
            f"slurm_{name}": value
            for name in ("partition", "account")
            if (value := getattr(settings, name))
        },
    )
    threads = settings.cpus if settings.gpus == 0 else 1  # a GPU run: one thread, as locally
    callable_job = SweepJob(str(sweep.root.resolve()), threads)
    with patch.dict(os.environ, import_env()):  # the jobs inherit it (sbatch's --export=ALL)
        return list(executor.map_array(callable_job, [job.key for job in jobs]))


if __name__ == "__main__":
    sys.exit(job_main(sys.argv[1:]))
