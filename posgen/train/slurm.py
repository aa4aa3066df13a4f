"""The Slurm executor of ``posgen sweep``, through submitit (``pip install 'posgen[slurm]'``).

A sweep's unfinished trainings go to Slurm as one job array (``submitit``'s ``map_array``)
with at most ``max_parallel`` of them running at once; each element runs
:func:`posgen.train.sweep.run_job` for one training, with the partition, time, GPUs, CPUs
and memory of :class:`posgen.train.grid.SlurmSettings`. submitit's files (the sbatch
script, pickles, each element's stdout and stderr) go to ``SWEEP/logs/slurm``.

Preemption and time-outs: Slurm signals the job (submitit asks for SIGUSR2 some seconds
before the end); the training checkpoints at its next step, then submitit's handler calls
:meth:`SweepJob.checkpoint` and requeues the element, which resumes from the checkpoint.

``cluster="local"`` is submitit's local executor: the same code path, in processes on this
machine (the tests use it; ``posgen sweep --executor submitit-local`` tries a grid with it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posgen.errors import UsageError
from posgen.train.grid import JobSpec, SlurmSettings
from posgen.train.sweep import Sweep, run_job

try:
    from submitit.helpers import Checkpointable
except ImportError:  # the extra is missing: submit() says so before anything uses this
    Checkpointable = object

SLURM_HINT = "the slurm executor needs submitit: pip install 'posgen[slurm]'"


def require_submitit() -> Any:
    """The ``submitit`` module, or :class:`UsageError` with the install hint."""
    try:
        import submitit
    except ImportError:
        raise UsageError(SLURM_HINT) from None
    return submitit


class SweepJob(Checkpointable):  # type: ignore[misc,valid-type]
    """One training of a sweep for submitit; requeued as it is (it resumes from its
    checkpoint: submitit's default ``checkpoint`` resubmits the same call)."""

    def __init__(self, root: str, threads: int) -> None:
        self.root, self.threads = root, threads

    def __call__(self, job_key: str) -> list[str]:
        return run_job(Path(self.root), job_key, self.threads)


def submit(
    sweep: Sweep, jobs: list[JobSpec], settings: SlurmSettings, cluster: str = "slurm"
) -> list[Any]:
    """Submit ``jobs`` as one array; returns submitit's job objects (empty when none)."""
    submitit = require_submitit()
    if not jobs:
        return []
    folder = sweep.logs / "slurm"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    parameters: dict[str, Any] = {
        "name": f"posgen-sweep-{sweep.root.name}",
        "timeout_min": settings.time_min,
        "mem_gb": settings.mem_gb,
        "cpus_per_task": settings.cpus,
        "gpus_per_node": settings.gpus,
        "tasks_per_node": 1,
        "slurm_array_parallelism": settings.max_parallel,
    }
    if settings.partition:
        parameters["slurm_partition"] = settings.partition
    if settings.account:
        parameters["slurm_account"] = settings.account
    executor.update_parameters(**parameters)
    threads = settings.cpus if settings.gpus == 0 else 1  # a GPU run: one thread, as locally
    callable_job = SweepJob(str(sweep.root.resolve()), threads)
    return list(executor.map_array(callable_job, [job.key for job in jobs]))
