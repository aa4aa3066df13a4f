"""The one writer, :func:`write_dataset`: a whole dataset, one part of N, or a merge.

A part writes every N-th shard and a part record into ``OUT/.posgen-parts/``; the last part (or
``posgen merge``) finishes the folder there and renames the card, ``data/`` and last the
manifest into ``OUT``.

>>> import tempfile
>>> from posgen.spec import TaskSpec
>>> bench = BenchmarkSpec(name="doc", configs={"cot": TaskSpec(task="cot", train_size=8,
...                                                              val_size=2, test_size=2)})
>>> out = Path(tempfile.mkdtemp()) / "ds"
>>> manifest = write_dataset(bench, out, storage="arrow")
>>> manifest.storage_format, [f.path for _, _, f in manifest.files()][0]
('arrow', 'cot/train/data-00000-of-00001.arrow')
>>> (out / "README.md").exists()  # no finish step given: no card
False
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import shutil
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack, suppress
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from posgen.errors import PosgenError, UsageError, problem_lines
from posgen.generator import DEFAULT_BLOCK_ROWS
from posgen.spec import BenchmarkSpec, TaskSpec, read_bounded
from posgen.store.dataset import Dataset, check_files, dataset_path
from posgen.store.formats import FORMATS, PARQUET_OPTIONS, Progress, check_features, written_paths
from posgen.store.manifest import (
    CARD_NAME,
    DEFAULT_ROW_GROUP_BYTES,
    DEFAULT_SHARD_BYTES,
    MANIFEST_NAME,
    MAX_PARTS,
    PARTS_DIR,
    DamagedDataset,
    FileEntry,
    Manifest,
    Shard,
    build_manifest,
    part_of,
    part_record_name,
    plan_benchmark,
    read_manifest,
    sha256_file,
)
from posgen.store.safety import (
    FILE_TMP_TAG,
    OutputExistsError,
    WriteFailed,
    atomic_folder,
    die_with_parent,
    exclusive,
    file_in_the_way,
    fsync_dir,
    hold,
    is_dataset_folder,
    read_only_folder,
    remove_leftover,
    resolve_target,
    walk,
    write_atomically,
)


def write_dataset(
    bench: BenchmarkSpec | None,
    out: Path,
    *,
    merge: Sequence[Path] | None = None,
    storage: str = "parquet",
    part: tuple[int, int] | None = None,
    overwrite: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    num_proc: int = 1,
    progress: Progress | None = None,
    finish: Finish | None = None,
) -> Manifest | None:
    """Generate ``bench`` into ``out``; the manifest (None while other parts are missing).

    ``part=(I, N)`` writes part I of N; ``merge=[DIR, ...]`` moves the parts in those folders
    into ``out`` and finishes it (``bench`` is None). ``finish`` writes the card before the
    folder is published.
    """
    out = dataset_path(out)
    real = Path(os.path.realpath(out))
    if dataset := next((d for d in real.parents if is_dataset_folder(d)), None):
        raise OutputExistsError(
            f"{out} is inside the dataset folder {dataset}; write outside it (a dataset holds "
            "only what its manifest lists)"
        )
    if (problem := file_in_the_way(out)) is not None:
        raise OutputExistsError(problem)
    if merge is not None:
        merge = [merge] if isinstance(merge, str | os.PathLike) else merge  # not its letters
        return _merge_parts(out, list(merge), finish)
    if bench is None:
        raise TypeError("write_dataset needs a benchmark unless it merges parts (merge=)")
    if not isinstance(bench, BenchmarkSpec):
        raise TypeError(
            f"write_dataset takes a BenchmarkSpec, not a {type(bench).__name__}; one TaskSpec "
            "is BenchmarkSpec(name='mine', configs={'cot': spec})"
        )
    check_features(storage, part)
    sizes = {"shard_bytes": shard_bytes, "row_group_bytes": row_group_bytes,
             "block_rows": block_rows, "num_proc": num_proc}  # fmt: skip
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise UsageError(f"write_dataset: {name} must be a whole number >= 1, got {value!r}")
    shard_bytes, row_group_bytes, block_rows, num_proc = map(int, sizes.values())  # np.int64(4)
    if part is not None:
        pair = isinstance(part, tuple | list) and len(part) == 2
        whole = pair and all(
            isinstance(n, int | np.integer) and not isinstance(n, bool) for n in part
        )
        if not whole or not 0 <= part[0] < part[1] <= MAX_PARTS:
            raise PartsError(f"part {part!r}: need whole numbers 0 <= I < N <= {MAX_PARTS:,}")
        index, count = map(int, part)
        out = resolve_target(out)
        check_part_target(out, bench)
        staging = out / PARTS_DIR
        shape = PartRecord(
            spec_id=bench.spec_id,
            benchmark=bench,
            index=index,
            count=count,
            shard_bytes=shard_bytes,
            row_group_bytes=row_group_bytes,
            files=[],
        )
        _agreeing([shape, *_records(out)])  # parts of another shape: refused before writing
        staging.mkdir(parents=True, exist_ok=True)
        mine = part_of(plan_benchmark(bench, shard_bytes), index, count)
        entries = write_shards(staging, mine, dict(bench.configs), num_proc, row_group_bytes,
                               block_rows, progress)  # fmt: skip
        record = shape.model_copy(update={"files": entries})
        # keys unsorted: the order of the configs is the order of the card's configs
        body = json.dumps(record.model_dump(mode="json"), indent=2) + "\n"
        write_atomically(staging / part_record_name(index, count), body.encode())
        try:
            return _finish_parts(out, finish)
        except IncompleteError:
            return None
    if overwrite and (line := foreign_files_line(resolve_target(out), str(out), "overwriting")):
        raise OutputExistsError(line)
    plan = plan_benchmark(bench, shard_bytes, storage)
    with atomic_folder(out, overwrite) as build:
        try:
            entries = write_shards(
                build, plan, dict(bench.configs), num_proc, row_group_bytes, block_rows,
                progress, storage, owner=build,
            )  # fmt: skip
            manifest = build_manifest(bench, plan, entries, storage, PARQUET_OPTIONS)
            return finish_folder(build, manifest, finish)
        except WriteFailed as error:
            name = error.path.relative_to(build) if error.path.is_relative_to(build) else error.path
            raise WriteFailed(out / name, error.reason) from error
        except OSError as error:  # raised outside any one file's write
            raise WriteFailed(out / MANIFEST_NAME, error) from error


def foreign_files_line(folder: Path, named: str, replacing: str, shown: int = 3) -> str | None:
    """The line refusing to replace the dataset ``folder`` (``named`` so) that holds files not
    the dataset's (a user's notes), which ``replacing`` it would delete; else None (also when
    its manifest cannot be read)."""
    try:
        manifest = read_manifest(folder)
    except (PosgenError, OSError):
        return None
    fmt, own = FORMATS[manifest.storage_format], written_paths(manifest)
    found = (path.relative_to(folder).as_posix() for path in folder.rglob("*") if not path.is_dir())
    found = sorted(path for path in found if path not in own and not fmt.is_cache(path))
    if not found:
        return None
    more = f" and {len(found) - shown} more" if len(found) > shown else ""
    return (
        f"{named} holds files that are not the dataset's ({', '.join(found[:shown])}{more}); "
        f"{replacing} would delete them: move them out first"
    )


Finish = Callable[[Path, Manifest], None]  # writes the card before the folder is published


def write_manifest(root: Path, manifest: Manifest) -> None:
    write_atomically(root / MANIFEST_NAME, manifest.to_json().encode())


def finish_folder(root: Path, manifest: Manifest, finish: Finish | None = None) -> Manifest:
    """Write the sidecars and ``posgen.json`` of ``manifest`` into ``root``, then ``finish``."""
    FORMATS[manifest.storage_format].write_sidecars(root, manifest)
    write_manifest(root, manifest)
    if finish is not None:
        finish(root, manifest)
    return manifest


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
    """Write ``shards`` with ``num_proc`` spawned processes (same bytes); their entries, in
    order. Workers die with this process and hold ``owner``'s lock while they live."""
    job = FORMATS[storage].write_shard
    if num_proc == 1 or len(shards) <= 1:
        return [
            job(root, s, specs[s.config], row_group_bytes, block_rows, progress) for s in shards
        ]
    entries: dict[int, FileEntry] = {}

    def tokens(i: int) -> int:
        return shards[i].rows * specs[shards[i].config].split_length(shards[i].split)

    # Spawned (no forked pyarrow thread pools); the largest shards first, to end together.
    context = multiprocessing.get_context("spawn")
    alive, keep_alive = context.Pipe(duplex=False)
    pool = ProcessPoolExecutor(
        max_workers=min(num_proc, len(shards)),
        mp_context=context,
        initializer=watch_parent,
        initargs=(alive, os.getpid(), owner),
    )
    with keep_alive, alive, pool:
        try:
            running = {
                pool.submit(job, root, shards[i], specs[shards[i].config], row_group_bytes,
                            block_rows): i
                for i in sorted(range(len(shards)), key=lambda i: -tokens(i))
            }  # fmt: skip
            for future in as_completed(running):
                entries[running[future]] = future.result()
                if progress is not None:
                    progress(tokens(running[future]))
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the shards not started never start
            raise
    return [entries[i] for i in range(len(shards))]


_HELD: list[int] = []  # a worker's lock on the folder it writes, held for its lifetime


def watch_parent(alive: Connection, parent: int, owner: Path | None) -> None:
    """Worker initializer: end when the parent dies (``PR_SET_PDEATHSIG``, or end-of-file on
    ``alive``); hold ``owner``'s lock."""
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


PART_FORMAT = "posgen-part"
MAX_RECORD_BYTES = 256 * 2**20


class PartsError(UsageError, ValueError):
    """Parts that do not belong together, or a folder that cannot take a part."""


class IncompleteError(PartsError):
    """Some parts of the run have not been written yet."""

    def __init__(self, have: set[int], count: int, note: str = "") -> None:
        # never one entry per part: N comes from a flag or a record file
        number = count - sum(1 for i in have if 0 <= i < count)
        first = list(itertools.islice((i for i in range(count) if i not in have), 10))
        shown = ", ".join(f"{i}/{count}" for i in first)
        more = f" and {number - len(first)} more" if number > len(first) else ""
        super().__init__(f"{number} of {count} parts missing: {shown}{more}{note}")


class PartRecord(BaseModel):
    """What one finished part wrote: its place in the run and its files' manifest entries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["posgen-part"] = PART_FORMAT
    spec_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    benchmark: BenchmarkSpec
    index: int = Field(ge=0, lt=MAX_PARTS)
    count: int = Field(ge=1, le=MAX_PARTS)
    shard_bytes: int = Field(ge=1)
    row_group_bytes: int = Field(ge=1)
    files: list[FileEntry]

    @field_serializer("benchmark")
    def _canonical(self, benchmark: BenchmarkSpec) -> dict[str, Any]:
        return benchmark.canonical()


def check_part_target(out: Path, bench: BenchmarkSpec) -> None:
    """Refuse a folder that is not missing, empty, or an unfinished part folder of ``bench``."""
    out = resolve_target(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; nothing was written")
    if (out / MANIFEST_NAME).exists():
        raise OutputExistsError(
            f"{out} holds a finished dataset ({MANIFEST_NAME}); refusing to write parts into it"
        )
    if (out / PARTS_DIR / MANIFEST_NAME).exists():
        raise PartsError(f"{out}: every part is written; finish it with `posgen merge {out}`")
    others = sorted(p.name for p in out.iterdir() if p.name != PARTS_DIR)
    if others:
        raise OutputExistsError(
            f"{out} holds files that are not posgen parts ({', '.join(others[:3])}); "
            "refusing to write into it"
        )
    for record in _records(out):
        if record.spec_id != bench.spec_id:
            raise PartsError(
                f"{out} holds parts of another benchmark (spec id {record.spec_id}, "
                f"this one is {bench.spec_id})"
            )
    if (stuck := read_only_folder(out, written=True)) is not None:
        raise PartsError(f"{out}: {stuck} is read-only (chmod -R u+w {out}); nothing was written")


PUBLISHED = (CARD_NAME, "data", MANIFEST_NAME)  # renamed into the folder in this order


def _finish_parts(out: Path, finish: Finish | None = None) -> Manifest:
    """Finish and publish a folder whose parts are all present (else :class:`IncompleteError`);
    parts finishing at once take turns."""
    out = resolve_target(out)
    staging = out / PARTS_DIR
    with ExitStack() as stack:
        try:
            fd = stack.enter_context(exclusive(staging))  # one finisher at a time
        except FileNotFoundError:
            if (out / MANIFEST_NAME).exists():  # finished already (perhaps by a concurrent part)
                return Dataset.open(out).verify()
            raise PartsError(f"{out} holds no posgen parts ({PARTS_DIR}/ is missing)") from None
        if not staging.exists() or os.stat(staging).st_ino != os.fstat(fd).st_ino:
            return Dataset.open(out).verify()  # another part finished it while we waited
        rendered = (staging / MANIFEST_NAME).exists()
        moving = any(os.path.lexists(out / name) for name in PUBLISHED)  # a publish underway
        carded = moving or (staging / CARD_NAME).exists() or finish is None
        if not rendered or not carded:
            _render(out, staging, finish)  # again when stopped between manifest and card
        for name in PUBLISHED:
            if (staging / name).exists():
                if os.path.lexists(out / name):
                    raise PartsError(f"{out / name} is in the way of the finished dataset")
                os.rename(staging / name, out / name)
        fsync_dir(out)
        shutil.rmtree(staging, ignore_errors=True)
    return read_manifest(out)


def _render(out: Path, staging: Path, finish: Finish | None) -> None:
    """Check the records and files in ``staging``; write its manifest there, then ``finish``."""
    records = _records(out)
    if not records:
        raise PartsError(f"{out} holds no posgen parts ({PARTS_DIR}/ is empty)")
    first = _complete(records)
    bench = first.benchmark
    if bench.spec_id != first.spec_id:
        raise PartsError("a part record's benchmark does not match its spec id")
    by_path = {entry.path: entry for record in records for entry in record.files}
    plan = plan_benchmark(bench, first.shard_bytes)
    missing = [shard.path for shard in plan if shard.path not in by_path]
    if missing:
        raise PartsError(f"no part recorded {missing[0]}")
    entries = [by_path[shard.path] for shard in plan]
    for stale in (staging / "data").rglob(f".*{FILE_TMP_TAG}*"):
        remove_leftover(stale)
    for entry in entries:  # a permission problem is the user's to fix, not damage
        if os.path.lexists(path := staging / entry.path) and not os.access(path, os.R_OK):
            raise PartsError(f"{path}: permission denied (make it readable); nothing was written")
    manifest = build_manifest(bench, plan, entries, "parquet", PARQUET_OPTIONS)
    problems = check_files(staging, manifest)  # the sha256 each part recorded: one read
    if problems:  # not finished: where each damaged file lies, and the part to rerun
        part_of = {entry.path: record.index for record in records for entry in record.files}
        lines = []
        for problem in problems:
            part = part_of.get(Path(problem.shown).relative_to(staging).as_posix())
            again = f" (written by --part {part}/{first.count}: rerun that part into {out})"
            lines.append(f"{problem}{again if part is not None else ''}")
        raise DamagedDataset(out, lines, left="its parts were not finished into a dataset")
    finish_folder(staging, manifest, finish)


def _agreeing(records: list[PartRecord]) -> PartRecord:
    """The first record, once every record agrees with it on the run's shape."""
    first = records[0]
    for record in records[1:]:
        for key in ("spec_id", "count", "shard_bytes", "row_group_bytes"):
            if getattr(record, key) != getattr(first, key):
                raise PartsError(
                    f"parts disagree on {key}: {getattr(first, key)!r} (part {first.index}) vs "
                    f"{getattr(record, key)!r} (part {record.index})"
                )
    return first


def _complete(records: list[PartRecord], note: str = "") -> PartRecord:
    """The first record, once the records agree and hold every part (else
    :class:`IncompleteError`, its line ending with ``note``)."""
    first = _agreeing(records)
    have = {record.index for record in records}
    if any(i not in have for i in range(first.count)):
        raise IncompleteError(have, first.count, note)
    return first


def _merge_parts(out: Path, sources: list[Path], finish: Finish | None = None) -> Manifest:
    """Move the parts in ``sources`` into ``out``, then finish it. Everything is checked before
    anything moves; a merge stopped while moving is finished by the same command."""
    out = resolve_target(out)
    moves: dict[Path, Path] = {}
    listed_sha256: dict[Path, str] = {}  # to know a file a stopped merge moved already
    records: list[PartRecord] = []
    seen: dict[str, Path] = {}
    for source in map(resolve_target, map(Path, sources)):
        if out.exists() and source.exists() and os.path.samefile(source, out):
            continue
        if (first := seen.setdefault(os.path.realpath(source), source)) is not source:
            twice = "is named twice" if first == source else f"and {first} are one folder"
            raise PartsError(f"{source} {twice}; name each part folder once")
        found = _records(source)
        if not found and (source / PARTS_DIR).is_dir() and _records(out):
            continue  # emptied by a merge that stopped: its parts are in ``out`` already
        if not found:
            raise PartsError(f"{source} holds no posgen parts ({PARTS_DIR}/ is missing or empty)")
        if (stuck := read_only_folder(source / PARTS_DIR)) is not None:  # files move out of it
            raise PartsError(
                f"{source}: {stuck} is read-only, and a merge moves the parts out of it: merge a "
                "writable copy; nothing was moved"
            )
        for record in found:
            staged = source / PARTS_DIR
            for entry in record.files:
                moves[staged / entry.path] = out / PARTS_DIR / entry.path
                listed_sha256[staged / entry.path] = entry.sha256
            moves[staged / part_record_name(record.index, record.count)] = (
                out / PARTS_DIR / part_record_name(record.index, record.count)
            )
        records += found
    if records:
        check_part_target(out, _agreeing(records).benchmark)
        _complete(records + _records(out), "; nothing was moved")
    for source, target in list(moves.items()):
        if not source.is_file():
            if target.is_file() and sha256_file(target) == listed_sha256.get(source):
                del moves[source]  # moved by a merge that stopped
                continue
            raise PartsError(f"{source} is listed in its part record but missing")
        if not os.access(source, os.R_OK):  # its sha256 could not be checked once moved
            raise PartsError(f"{source}: permission denied (make it readable); nothing was moved")
        if os.path.lexists(target) and not (
            target.is_file() and sha256_file(source) == sha256_file(target)
        ):
            raise PartsError(f"{target} exists and differs from {source}; nothing was moved")
    for source, target in moves.items():  # records last: a part counts once its files are in
        target.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(target):
            shutil.move(str(source), str(target))
    manifest = _finish_parts(out, finish)
    for source in seen.values():  # the emptied part folders' shells (empty folders alone)
        for folder, _, _ in reversed(list(walk(source / PARTS_DIR))):
            with suppress(OSError):
                os.rmdir(folder)
    return manifest


def _records(out: Path) -> list[PartRecord]:
    folder = out / PARTS_DIR
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("part-*.json")):
        try:
            body = json.loads(read_bounded(path, MAX_RECORD_BYTES))
        except (OSError, ValueError, RecursionError) as error:
            raise PartsError(f"{path} is unreadable: {error}") from None
        if not isinstance(body, dict) or body.get("format") != PART_FORMAT:
            raise PartsError(f"{path} is not a posgen part record")
        try:
            records.append(PartRecord.model_validate(body))
        except ValidationError as error:
            raise PartsError(f"{path}: " + "; ".join(problem_lines(error)[:3])) from None
    return records
