"""The tiny sweep (a 1-layer model), a finished rope + yarn sweep, forked ``python -m`` workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
from _pytest.assertion.rewrite import AssertionRewritingHook

TINY = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32, "batch_size": 32}
TIMING = ("seconds", "train_seconds", "wall_seconds")  # the only bytes that differ between runs


@pytest.fixture(autouse=True)
def _fresh_hook_counts():
    from posgen import signals

    signals._passes.clear()


@pytest.fixture
def hook(monkeypatch):
    """``hook("step:3:SIGTERM")``: POSGEN_SIGNAL_AT for this test; ``hook(None)`` unsets it."""
    from posgen.signals import HOOK_ENV

    return lambda at: monkeypatch.setenv(HOOK_ENV, at) if at else monkeypatch.delenv(HOOK_ENV)


@pytest.fixture(scope="session")
def sweep_grid(tiny_training_dataset):
    """``sweep_grid(["rope"], seeds=[4])``: a grid (a dict) of the tiny sweep, seed 3."""

    def grid(pes, **extra) -> dict:
        preset = {"name": "cpu", "overrides": {**TINY, "epochs": 2}}
        base = {"datasets": [str(tiny_training_dataset)], "configs": ["recursive"], "pes": pes}
        return {**base, "seeds": [3], "presets": [preset], **extra}

    return grid


@pytest.fixture(scope="session")
def expand_grid():
    """``expand_grid(grid)``: the runs of a grid dict."""
    from posgen.cli.sweep import resolve_encoding
    from posgen.train.config import Grid, expand

    return lambda grid: expand(Grid.model_validate(grid), resolve_encoding)


@pytest.fixture(scope="session")
def new_sweep(sweep_grid, expand_grid):
    """``new_sweep(root, ["rope", "yarn"])``: an untrained sweep of one training, and its key."""
    from posgen.train.config import jobs_of
    from posgen.train.sweep import Sweep

    def make(root: Path, pes=("rope", "yarn")) -> tuple[Sweep, str]:
        sweep = Sweep(root)
        sweep.add(expand_grid(sweep_grid(list(pes))))
        (job,) = jobs_of(sweep.read().runs)
        return sweep, job.key

    return make


@pytest.fixture(scope="session")
def run_bytes():
    """``run_bytes(folder)``: a run folder's files' bytes, its JSON records without timings."""

    def read(folder: Path) -> dict[str, object]:
        files: dict[str, object] = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        lines = [json.loads(line) for line in files.pop("metrics.jsonl").decode().splitlines()]
        files["metrics"] = [{k: v for k, v in line.items() if k not in TIMING} for line in lines]
        record = json.loads(files.pop("results.json"))
        files["results"] = {k: v for k, v in record.items() if k not in TIMING}
        return files

    return read


@pytest.fixture(scope="session")
def sweep_bytes(run_bytes):
    return lambda sweep: {run.key: run_bytes(sweep.run_folder(run)) for run in sweep.read().runs}


@pytest.fixture(scope="session")
def finished_sweep(new_sweep, tmp_path_factory) -> Path:
    """An uninterrupted rope + yarn sweep (never changed: copy it)."""
    import torch

    from posgen.train.sweep import run_job

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sweep, job = new_sweep(tmp_path_factory.mktemp("finished") / "S")
    run_job(sweep.root, job)
    torch.set_num_threads(threads)
    return sweep.root


@pytest.fixture(scope="session")
def reference(finished_sweep, sweep_bytes) -> dict[str, dict[str, object]]:
    from posgen.train.sweep import Sweep

    return sweep_bytes(Sweep(finished_sweep))


@pytest.fixture
def sweep_copy(finished_sweep, tmp_path):
    from posgen.train.sweep import Sweep

    shutil.copytree(finished_sweep, tmp_path / "S", symlinks=True)
    return Sweep(tmp_path / "S")


class ForkedPopen(subprocess.Popen):
    """``Popen`` whose ``python [-u] -m MODULE ARGS`` children are forks of this process."""

    started: ClassVar[list[str]] = []  # the modules this process ran so

    def _execute_child(self, args, executable, preexec, *more):
        # more: close_fds, pass_fds, cwd, env, ..., then the six pipe ends, then the rest
        command = [str(a) for a in args] if isinstance(args, list | tuple) else []
        flags = command[1 : command.index("-m")] if "-m" in command else None
        if not command or command[0] != sys.executable or flags not in ([], ["-u"]):
            return super()._execute_child(args, executable, preexec, *more)
        module, *argv = command[command.index("-m") + 1 :]
        self.started.append(module)
        env, pipes = more[3], more[7:13]
        self.pid = os.fork()
        if self.pid == 0:  # the child never returns into pytest
            _run_forked(module, argv, (pipes[0], pipes[3], pipes[5]), env, preexec)
        self._child_created = True
        self._close_pipe_fds(*pipes)


def _run_forked(module: str, argv: list[str], streams: tuple, env, preexec) -> None:
    import importlib
    import logging
    import runpy
    import traceback

    from posgen import signals

    code = 1
    try:
        for fd, stream in enumerate(streams):
            if stream != -1:
                os.dup2(stream, fd)
        if streams[0] != -1:
            sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.environ.clear()
        os.environ.update(env if env is not None else {})
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, signal.SIG_DFL)
        signals.restore({})
        signals._passes.clear()
        sys.unraisablehook = sys.__unraisablehook__
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in getattr(logger, "handlers", []):
                if type(handler) is logging.StreamHandler:
                    handler.setStream(sys.stderr)
        if "submitit.core.logger" in sys.modules:  # configured at import: to these streams
            importlib.reload(sys.modules["submitit.core.logger"])
        if preexec is not None:
            preexec()
        sys.modules.pop(module, None)  # -m runs a copy of its own
        # pytest's import hook claims a module named on its command line: runpy cannot run it
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, AssertionRewritingHook)]
        sys.argv = [module, *argv]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, int | None):
            print(done.code, file=sys.stderr)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


@pytest.fixture
def forked_interpreters(monkeypatch) -> list[str]:
    """``python -m`` children of this test are forks of it: the modules they ran, in order."""
    started: list[str] = []
    monkeypatch.setattr(ForkedPopen, "started", started)
    monkeypatch.setattr(subprocess, "Popen", ForkedPopen)
    return started
