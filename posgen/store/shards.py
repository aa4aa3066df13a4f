"""Shard files written by one process or a pool of spawned workers that die with their parent.

:func:`write_shards` is the only place shard files are produced, for whole runs
(:mod:`posgen.store.writer`) and parts (:mod:`posgen.store.parts`) alike.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import suppress
from multiprocessing.connection import Connection
from pathlib import Path

from posgen.generator import DEFAULT_BLOCK_ROWS
from posgen.spec import TaskSpec
from posgen.store.formats import FORMATS, Progress
from posgen.store.layout import DEFAULT_ROW_GROUP_BYTES, Shard
from posgen.store.manifest import FileEntry
from posgen.store.safety import die_with_parent, hold


def write_shards(
    root: Path,
    shards: list[Shard],
    specs: dict[str, TaskSpec],
    num_proc: int = 1,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    progress: Progress | None = None,
    storage: str = "parquet",
    owner: Path | None = None,
) -> list[FileEntry]:
    """Write ``shards`` with ``num_proc`` processes; their entries, in the order given.

    Worker processes end as soon as this process dies, however it dies, and each holds the
    owner's lock (:mod:`posgen.store.safety`) on the folder ``owner`` while it lives.

    Every shard's bytes depend only on the shard and the spec, so the worker count changes
    nothing in the files (tests compare checksums of 1, 2 and 3 processes). Workers are
    spawned, so a script calling this with ``num_proc > 1`` needs the usual
    ``if __name__ == "__main__":`` guard (the CLI has it).
    """
    if num_proc < 1:
        raise ValueError(f"num_proc must be >= 1, got {num_proc}")
    job = FORMATS[storage].write_shard
    if num_proc == 1 or len(shards) <= 1:
        return [
            job(root, s, specs[s.config], row_group_bytes, block_rows, progress) for s in shards
        ]
    entries: dict[int, FileEntry] = {}

    def tokens(i: int) -> int:
        return shards[i].rows * specs[shards[i].config].split_length(shards[i].split)

    # Largest shards first (longest-processing-time order), so the last shards to finish
    # are small ones and the processes end together.
    queue = deque(sorted(range(len(shards)), key=lambda i: -tokens(i)))
    running: dict[Future[FileEntry], int] = {}

    def collect(block: bool) -> None:
        done = [f for f in running if f.done()]
        if block and not done:
            done = list(wait(running, return_when=FIRST_COMPLETED).done)
        for future in done:
            i = running.pop(future)
            entries[i] = future.result()
            if progress is not None:
                progress(tokens(i))

    # num_proc spawned workers (spawned: no forked pyarrow thread pools) pull shards from
    # the pool's queue as they free up; the parent only collects, so no worker ever waits
    # for it. At most 2 * num_proc shards are queued at once to bound the pending futures.
    context = multiprocessing.get_context("spawn")
    workers = min(num_proc, len(shards))
    # Workers end when this process dies (their read end of `alive` sees EOF), and hold
    # `owner`'s lock while they live, so no run removes the folder under them.
    alive, keep_alive = context.Pipe(duplex=False)
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=watch_parent,
        initargs=(alive, os.getpid(), owner),
    )
    with keep_alive, alive, pool:
        while queue or running:
            while queue and len(running) < 2 * workers:
                i = queue.popleft()
                s = shards[i]
                args = (root, s, specs[s.config], row_group_bytes, block_rows)
                running[pool.submit(job, *args)] = i
            collect(block=True)
    return [entries[i] for i in range(len(shards))]


_HELD: list[int] = []
"""Descriptors a worker keeps open for its lifetime (its lock on the folder it writes)."""


def watch_parent(alive: Connection, parent: int, owner: Path | None) -> None:
    """Worker initializer: end when the parent process dies; hold ``owner``'s lock.

    On Linux the kernel kills the worker when its parent dies (``PR_SET_PDEATHSIG``); a
    parent that died before that was set is seen by its PID having changed. Elsewhere a
    thread waits on ``alive``, a pipe whose only write end the parent holds: end-of-file
    means the parent is gone. Either way a killed run's workers do not go on writing into
    a folder the next run may remove.
    """
    die_with_parent(parent, signal.SIGKILL)

    def wait() -> None:
        with suppress(EOFError, OSError):
            while True:
                alive.recv_bytes()
        os._exit(1)

    if owner is not None:
        fd = os.open(owner, os.O_RDONLY)
        hold(fd, owner)
        _HELD.append(fd)
    threading.Thread(target=wait, name="posgen-parent-watch", daemon=True).start()
