"""Resumable training: the checkpoint of an unfinished run, and signals that stop it cleanly.

A training keeps one checkpoint in its work folder (``posgen sweep``: ``SWEEP/work/<job>``;
``posgen train --out RUN``: the hidden sibling ``.RUN.posgen-resume``). It holds what a
resumed run needs to take the very next step an uninterrupted run would take: the model,
optimiser and schedule states, torch's RNG states, where the run stands (epoch, batch offset
within it, step, the epoch's losses so far), the log of finished epochs and every position
encoding's best validation selection (accuracy, epoch, weights). It is written at the end
of every epoch, and mid-epoch when a signal asks the run to stop, to a temporary file that is
renamed over the old one (:func:`posgen.store.safety.durable_file`): a kill at any moment
leaves the previous checkpoint or the new one, never a torn one. On CPU a resumed run writes
the same bytes as an uninterrupted one (``tests/test_sweep.py`` kills runs and compares).

:class:`StopRequests` turns SIGINT, SIGTERM, SIGHUP and SIGUSR2 (submitit's preemption
signal) into a request that the training loop honours between two steps: it checkpoints,
then raises :class:`posgen.signals.Interrupted` (exit 128 + signal), or, under submitit,
hands SIGUSR2 to submitit's own handler, which requeues the job.

``progress.json`` next to the checkpoint says where it stands without torch
(``{"epoch": 2, "step": 37, "done": false}``), for ``posgen sweep --status``.

Tests stop a run at exact points with ``POSGEN_TEST_KILL``
(:func:`posgen.train.progress.kill_point`): ``step:5:SIGTERM`` sends SIGTERM to the process
right after the run's 5th training step; points: ``step``, ``checkpoint`` (a checkpoint written but
not yet renamed into place), ``final`` (predictions of a run folder written, its scores not).
No timing is involved.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from posgen.signals import Interrupted
from posgen.store.safety import durable_file, write_atomically
from posgen.train.progress import PROGRESS, kill_point, read_progress

CHECKPOINT = "checkpoint.pt"
STOP_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR2")
    if hasattr(signal, name)
)
PREEMPTION = getattr(signal, "SIGUSR2", None)
"""submitit's preemption and time-out signal (its handler checkpoints and requeues)."""


class CheckpointMismatch(ValueError):
    """The checkpoint in a work folder belongs to another training."""


@dataclass
class Position:
    """Where a training stands: the next batch is ``offset`` rows into epoch ``epoch``."""

    epoch: int = 1
    offset: int = 0
    step: int = 0
    losses: list[torch.Tensor] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    train_seconds: float = 0.0
    done: bool = False


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoint of training ``key`` in ``folder`` (created on the first save)."""

    folder: Path
    key: str

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT

    def progress(self) -> dict[str, Any] | None:
        """``progress.json``, or None when no checkpoint was written yet."""
        return read_progress(self.folder)

    def save(
        self,
        position: Position,
        selections: list[Any],
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
    ) -> None:
        """Write the checkpoint atomically, then its ``progress.json``."""
        payload = {
            "key": self.key,
            "position": {
                "epoch": position.epoch,
                "offset": position.offset,
                "step": position.step,
                "losses": torch.stack(position.losses).cpu() if position.losses else None,
                "log": json.dumps(position.log),
                "seconds": position.seconds,
                "train_seconds": position.train_seconds,
                "done": position.done,
            },
            "selections": {
                s.pe.label: {"accuracy": s.accuracy, "epoch": s.epoch, "state": s.state}
                for s in selections
            },
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": rng_states(),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        with durable_file(self.path) as sink:
            torch.save(payload, sink)
            kill_point("checkpoint")
        summary = {"epoch": position.epoch, "step": position.step, "done": position.done}
        write_atomically(self.folder / PROGRESS, (json.dumps(summary) + "\n").encode())

    def load(
        self,
        selections: list[Any],
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
        device: torch.device,
    ) -> Position | None:
        """Restore everything from the checkpoint; None when there is none.

        Raises :class:`CheckpointMismatch` when it belongs to another training or lacks a
        selection of one of ``selections``' position encodings.
        """
        if not self.path.is_file():
            return None
        payload = torch.load(self.path, map_location=device, weights_only=True)
        if payload.get("key") != self.key:
            raise CheckpointMismatch(f"{self.path} belongs to another training")
        saved = payload["selections"]
        missing = [s.pe.label for s in selections if s.pe.label not in saved]
        if missing:
            raise CheckpointMismatch(f"{self.path} has no selection for {', '.join(missing)}")
        for selection in selections:
            entry = saved[selection.pe.label]
            selection.accuracy, selection.epoch = entry["accuracy"], entry["epoch"]
            selection.state = entry["state"]
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        schedule.load_state_dict(payload["schedule"])
        set_rng_states(payload["rng"])
        at = payload["position"]
        losses = [] if at["losses"] is None else list(at["losses"].to(device).unbind())
        return Position(
            epoch=at["epoch"],
            offset=at["offset"],
            step=at["step"],
            losses=losses,
            log=json.loads(at["log"]),
            seconds=at["seconds"],
            train_seconds=at["train_seconds"],
            done=at["done"],
        )


def rng_states() -> dict[str, Any]:
    """torch's CPU and CUDA random states."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore :func:`rng_states` (CUDA states only where the same devices are present)."""
    torch.set_rng_state(states["cpu"].cpu())
    cuda = states["cuda"]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"]])


class StopRequests:
    """Signals recorded while installed, to be honoured at the next safe point.

    >>> with StopRequests() as stop:
    ...     stop.requested is None
    True
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = self.requested or signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def stop(self) -> None:
        """Leave the run: after the checkpoint, submitit requeues a preempted job (its own
        SIGUSR2 handler); every other signal raises :class:`Interrupted`."""
        signum = self.requested
        if signum is None:
            return
        handler = self.previous.get(signum)
        self.__exit__()
        if signum == PREEMPTION and callable(handler):
            handler(signum, None)  # submitit: checkpoint() of the job, requeue, exit
        raise Interrupted(signum)


@contextmanager
def stop_requests(enabled: bool) -> Iterator[StopRequests | None]:
    """:class:`StopRequests` while the block runs, or None (no handlers) when not enabled."""
    if not enabled:
        yield None
        return
    with StopRequests() as stop:
        yield stop
