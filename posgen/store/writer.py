"""The one writer: a benchmark into a dataset folder, whole or one part of N, Parquet or Arrow.

:func:`write_dataset` is what ``posgen generate``, ``posgen publish`` and the Python API call.
A whole run builds in a hidden sibling and renames it into place when complete
(:mod:`posgen.store.atomic`); a part run (:mod:`posgen.store.parts`) writes its shards and
a part record, and the last part writes the manifest. Either way the folder is finished by
:func:`finish_folder`: shards, sidecars, manifest, then the card, once.

Layout (file names in :mod:`posgen.store.layout`)::

    DIR/README.md                                  data card with the `configs` YAML
    DIR/posgen.json                                manifest (spec, versions, sha256s)
    DIR/data/<config>/<split>-NNNNN-of-NNNNN.parquet      (--format parquet)
    DIR/<config>/<split>/data-NNNNN-of-NNNNN.arrow        (--format arrow, + sidecars)

>>> import tempfile
>>> from posgen.spec import TaskSpec
>>> bench = BenchmarkSpec(name="doc", configs={"cot": TaskSpec(task="cot", train_size=8,
...                                                              val_size=2, test_size=2)})
>>> out = Path(tempfile.mkdtemp()) / "ds"
>>> manifest = write_dataset(bench, out, storage="arrow")
>>> manifest.storage_format, [f.path for _, _, f in manifest.files()][0]
('arrow', 'cot/train/data-00000-of-00001.arrow')
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import suppress
from multiprocessing.connection import Connection
from pathlib import Path

from posgen.generator import DEFAULT_BLOCK_ROWS
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.store.atomic import WriteFailed, atomic_folder
from posgen.store.formats import FORMATS, Progress, check_features
from posgen.store.layout import (
    DEFAULT_ROW_GROUP_BYTES,
    DEFAULT_SHARD_BYTES,
    MANIFEST_NAME,
    Shard,
    plan_benchmark,
)
from posgen.store.lock import hold
from posgen.store.manifest import FileEntry, Manifest, build_manifest, write_manifest

Finish = Callable[[Path, Manifest], None]
"""Called on the complete build folder (shards, sidecars, manifest) before it is renamed
into place; writes the card. Raising leaves no folder behind."""


def unvalidated_card(root: Path, manifest: Manifest) -> None:
    """The default :data:`Finish`: a card saying the data was not validated."""
    from posgen.card import write_card

    write_card(root, manifest=manifest)


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
    owner's lock (:mod:`posgen.store.lock`) on the folder ``owner`` while it lives.

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
    if _LIBC is not None and hasattr(_LIBC, "prctl"):
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)

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


PR_SET_PDEATHSIG = 1


def _linux_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _linux_libc()


def write_dataset(
    bench: BenchmarkSpec,
    out: Path,
    *,
    storage: str = "parquet",
    part: tuple[int, int] | None = None,
    overwrite: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    num_proc: int = 1,
    progress: Progress | None = None,
    finish: Finish = unvalidated_card,
) -> Manifest | None:
    """Generate ``bench`` into ``out``; the manifest (None while other parts are missing).

    ``storage`` is ``"parquet"`` or ``"arrow"``; ``part=(I, N)`` writes part I of N (every
    N-th shard) into ``out``, and the last part to finish writes the manifest and card. A
    whole run's folder appears only when complete; ``finish`` renders its card (publish
    validates there first). An ``OSError`` (disk full, file too large) becomes
    :class:`~posgen.store.atomic.WriteFailed` naming the file by its path under ``out``.
    """
    check_features(storage, part)
    out = Path(out)
    if part is not None:
        from posgen.store.parts import write_part

        index, count = part
        return write_part(bench, out, index, count, shard_bytes, row_group_bytes, num_proc,
                          progress)  # fmt: skip
    plan = plan_benchmark(bench, shard_bytes, storage)
    with atomic_folder(out, overwrite) as build:
        try:
            entries = write_shards(
                build, plan, dict(bench.configs), num_proc, row_group_bytes, block_rows,
                progress, storage, owner=build,
            )  # fmt: skip
            return finish_folder(build, bench, plan, entries, storage, finish)
        except WriteFailed as error:
            name = error.path.relative_to(build) if error.path.is_relative_to(build) else error.path
            raise WriteFailed(out / name, error.reason) from error
        except OSError as error:  # raised outside any one file's write
            raise WriteFailed(out / MANIFEST_NAME, error) from error


def finish_folder(
    root: Path,
    bench: BenchmarkSpec,
    plan: list[Shard],
    entries: list[FileEntry],
    storage: str = "parquet",
    finish: Finish = unvalidated_card,
) -> Manifest:
    """Write the sidecars, ``posgen.json`` and (through ``finish``) the card of shards
    ``plan`` with manifest ``entries``."""
    fmt = FORMATS[storage]
    files: dict[tuple[str, str], list[FileEntry]] = {
        (config, split): []
        for config, spec in bench.configs.items()
        for split in (*spec.split_names, *spec.probe_names)
    }
    for shard, entry in zip(plan, entries, strict=True):
        files[(shard.config, shard.split)].append(entry)
    manifest = build_manifest(bench, files, storage, fmt.parquet_options())
    fmt.write_sidecars(root, manifest)
    write_manifest(root, manifest)
    finish(root, manifest)
    return manifest
