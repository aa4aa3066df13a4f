"""Write a benchmark to a folder that ``datasets.load_dataset`` reads offline.

Layout::

    DIR/README.md                                  data card with the `configs` YAML
    DIR/posgen.json                                manifest (spec, versions, sha256s)
    DIR/data/<config>/<split>-NNNNN-of-NNNNN.parquet

The folder appears only when complete (:mod:`posgen.atomic`).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import posgen
from posgen.arrow_io import open_writer, row_schema, rows_to_table
from posgen.atomic import WriteFailed, atomic_folder
from posgen.card import render_card
from posgen.generator import DEFAULT_BLOCK_ROWS, generate_rows
from posgen.layout import (
    DEFAULT_ROW_GROUP_BYTES,
    DEFAULT_SHARD_BYTES,
    Shard,
    generation_rows,
    plan_benchmark,
    rows_per,
)
from posgen.manifest import MANIFEST_NAME, build_manifest, write_manifest
from posgen.spec import BenchmarkSpec, TaskSpec

Progress = Callable[[int], None]
"""Called with the number of tokens just written."""


def shard_metadata(shard: Shard, spec: TaskSpec) -> dict[str, str]:
    """Provenance stored in every Parquet file's schema metadata."""
    return {
        "posgen.version": posgen.__version__,
        "posgen.config": shard.config,
        "posgen.split": shard.split,
        "posgen.spec_id": spec.spec_id,
        "posgen.shard": f"{shard.index}/{shard.count}",
        "posgen.rows": f"{shard.start}:{shard.stop}",
    }


class HashingFile:
    """A write-only file that hashes and counts what passes through (no re-read)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.digest, self.size, self.closed = handle, hashlib.sha256(), 0, False

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False


def temporary_name(path: Path) -> Path:
    """Where a shard is written before it is renamed into place."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def remove_stale_temporaries(path: Path) -> None:
    """Remove unfinished copies of ``path`` left by killed runs."""
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            stale.unlink(missing_ok=True)


@contextmanager
def durable_shard(path: Path) -> Iterator[HashingFile]:
    """A sink for the bytes of ``path``: hashed as written, fsynced, then renamed into place.

    The bytes go to a temporary sibling, so ``path`` only ever holds a complete file. An
    ``OSError`` (disk full, file too large) becomes :class:`WriteFailed` naming ``path``;
    on any failure the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    temporary = temporary_name(path)
    try:
        with open(temporary, "wb") as handle:
            sink = HashingFile(handle)
            yield sink
            handle.flush()
            os.fsync(handle.fileno())  # durable before it gets its name
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise WriteFailed(path, error) from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def shard_entry(shard: Shard, sink: HashingFile) -> dict[str, Any]:
    """The manifest entry of a shard written through ``sink``."""
    return {
        "path": shard.path,
        "rows": shard.rows,
        "first_id": shard.start,
        "bytes": sink.size,
        "sha256": sink.digest.hexdigest(),
    }


def write_shard(
    root: Path,
    shard: Shard,
    spec: TaskSpec,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Generate and write one shard (to a temporary name, then renamed); its manifest entry.

    Rows are generated a block at a time (whole row groups, at most
    :data:`~posgen.layout.GENERATION_BYTES`), so memory stays bounded for any shard size;
    row groups start at ``shard.start`` + multiples of the group size, whatever the block.
    """
    schema = row_schema(spec.modulus, shard_metadata(shard, spec))
    length = spec.split_length(shard.split)
    per_group = rows_per(row_group_bytes, spec, shard.split)
    step = generation_rows(spec, shard.split, per_group, block_rows)
    with durable_shard(root / shard.path) as sink, open_writer(sink, schema) as writer:
        for first in range(shard.start, shard.stop, step):
            last = min(shard.stop, first + step)
            rows = generate_rows(spec, shard.split, first, last, block_rows)
            writer.write_table(rows_to_table(first, rows, schema), row_group_size=per_group)
            del rows
            if progress is not None:
                progress((last - first) * length)
    return shard_entry(shard, sink)


ShardWriter = Callable[..., dict[str, Any]]
"""``(root, shard, spec, row_group_bytes, block_rows, progress) -> manifest entry``."""


def write_shards(
    root: Path,
    shards: list[Shard],
    specs: dict[str, TaskSpec],
    num_proc: int = 1,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    progress: Progress | None = None,
    shard_writer: ShardWriter | None = None,
) -> list[dict[str, Any]]:
    """Write ``shards`` with ``num_proc`` processes; their entries, in the order given.

    Every shard's bytes depend only on the shard and the spec, so the worker count changes
    nothing in the files (tests compare checksums of 1, 2 and 3 processes). Workers are
    spawned, so a script calling this with ``num_proc > 1`` needs the usual
    ``if __name__ == "__main__":`` guard (the CLI has it).
    """
    if num_proc < 1:
        raise ValueError(f"num_proc must be >= 1, got {num_proc}")
    job = write_shard if shard_writer is None else shard_writer
    if num_proc == 1 or len(shards) <= 1:
        return [
            job(root, s, specs[s.config], row_group_bytes, block_rows, progress) for s in shards
        ]
    entries: dict[int, dict[str, Any]] = {}

    def tokens(i: int) -> int:
        return shards[i].rows * specs[shards[i].config].split_length(shards[i].split)

    # Largest shards first (longest-processing-time order), so the last shards to finish
    # are small ones and the processes end together.
    queue = deque(sorted(range(len(shards)), key=lambda i: -tokens(i)))
    running: dict[Future[dict[str, Any]], int] = {}

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
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        while queue or running:
            while queue and len(running) < 2 * workers:
                i = queue.popleft()
                s = shards[i]
                args = (root, s, specs[s.config], row_group_bytes, block_rows)
                running[pool.submit(job, *args)] = i
            collect(block=True)
    return [entries[i] for i in range(len(shards))]


def write_benchmark_into(
    build: Path,
    bench: BenchmarkSpec,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    progress: Progress | None = None,
    final: Path | None = None,
    num_proc: int = 1,
) -> dict[str, Any]:
    """Generate every config of ``bench`` into the empty folder ``build``; returns the manifest.

    The card written here says the data was not validated (see :mod:`posgen.publish`).
    An ``OSError`` (disk full, file too large) becomes :class:`WriteFailed` naming the file
    by its path under ``final``, the folder the build will become.
    """
    plan = plan_benchmark(bench, shard_bytes)
    try:
        entries = write_shards(
            build, plan, dict(bench.configs), num_proc, row_group_bytes, block_rows, progress
        )
        return finish_folder(build, bench, plan, entries)
    except WriteFailed as error:
        name = error.path.relative_to(build) if error.path.is_relative_to(build) else error.path
        raise WriteFailed((final or build) / name, error.reason) from error
    except OSError as error:  # raised outside any one file's write
        raise WriteFailed((final or build) / MANIFEST_NAME, error) from error


def write_benchmark(
    bench: BenchmarkSpec,
    out: Path,
    overwrite: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    progress: Progress | None = None,
    num_proc: int = 1,
) -> dict[str, Any]:
    """Generate every config of ``bench`` into ``out`` with ``num_proc`` processes.

    Returns the manifest. The folder appears only when complete.
    """
    with atomic_folder(Path(out), overwrite) as build:
        return write_benchmark_into(
            build,
            bench,
            shard_bytes,
            row_group_bytes,
            block_rows,
            progress,
            final=Path(out),
            num_proc=num_proc,
        )


def finish_folder(
    root: Path, bench: BenchmarkSpec, plan: list[Shard], entries: list[dict[str, Any]]
) -> dict[str, Any]:
    """Write ``posgen.json`` and the card for shards ``plan`` with manifest ``entries``.

    A failure while writing either becomes :class:`WriteFailed` naming that file.
    """
    files: dict[tuple[str, str], list[dict[str, Any]]] = {
        (config, split): [] for config, spec in bench.configs.items() for split in spec.split_names
    }
    for shard, entry in zip(plan, entries, strict=True):
        files[(shard.config, shard.split)].append(entry)
    manifest = build_manifest(bench, files)
    current = root / MANIFEST_NAME
    try:
        write_manifest(root, manifest)
        current = root / "README.md"
        current.write_text(render_card(manifest, root=root))
    except OSError as error:
        raise WriteFailed(current, error) from error
    return manifest
