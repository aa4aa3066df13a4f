"""Part-addressable runs: part I of N writes only its shards; the parts combine into one folder.

The shards of a run are fixed by the spec and the shard size (:func:`posgen.store.layout.
plan_benchmark`), and part ``I`` of ``N`` writes every N-th of them, starting with shard I
(:func:`posgen.store.layout.part_of`). Until the run is finished, everything a part writes
stays in the hidden folder ``OUT/.posgen-parts/``: its Parquet files (under the same
relative paths they end up at) and its manifest entries in ``part-IIIII-of-NNNNN.json``
(a :class:`PartRecord`). An unfinished folder therefore holds no data ``datasets`` would
load (it skips hidden folders), and posgen names it as unfinished.

When the last record is present the folder is *finished*, once, under a lock
(:mod:`posgen.store.safety`): ``posgen.json`` and (by the caller's ``finish`` step)
``README.md`` are rendered into ``.posgen-parts/`` exactly as a single-process run renders
them, then the card, ``data/``
and last the manifest are renamed into ``OUT``, and ``.posgen-parts`` is removed. A run
killed at any step leaves a folder that either loads nothing or loads exactly the finished
data; ``posgen merge OUT`` completes it. The result is byte-identical to ``posgen generate``
without ``--part``.

Parts run anywhere: in one shared folder (the last part to finish finishes it), or in separate
folders on separate machines, copied into one folder afterwards (hidden files included, e.g.
``rsync -a part*/ OUT/``) and finished with ``posgen merge OUT``; ``posgen merge OUT DIR...``
moves the parts' files in for you. ``OUT`` must then be missing, empty, or an unfinished
folder of the same run: merge never writes over anything else.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from posgen.errors import UsageError, problem_lines
from posgen.spec import BenchmarkSpec
from posgen.store.dataset import check_files, verify_dataset
from posgen.store.finish import Finish, finish_folder, shards_manifest
from posgen.store.formats import Progress
from posgen.store.layout import (
    CARD_NAME,
    DEFAULT_ROW_GROUP_BYTES,
    DEFAULT_SHARD_BYTES,
    FILE_TMP_TAG,
    MAX_PARTS,
    PARTS_DIR,
    part_of,
    part_record_name,
    plan_benchmark,
)
from posgen.store.manifest import (
    DamagedDataset,
    FileEntry,
    Manifest,
    read_bounded,
    read_manifest,
    sha256_file,
)
from posgen.store.safety import (
    MARKER,
    OutputExistsError,
    exclusive,
    fsync_dir,
    remove_unowned,
    resolve_target,
    write_atomically,
)
from posgen.store.shards import write_shards

PART_FORMAT = "posgen-part"
MAX_RECORD_BYTES = 256 * 2**20

__all__ = ["PARTS_DIR", "IncompleteError", "PartsError", "finish_parts", "merge_parts"]


class PartsError(UsageError, ValueError):
    """Parts that do not belong together, or a folder that cannot take a part."""


class IncompleteError(PartsError):
    """Some parts of the run have not been written yet."""

    def __init__(self, have: set[int], count: int) -> None:
        # never one entry per part: N comes from a flag or a record file
        number = count - sum(1 for i in have if 0 <= i < count)
        first = list(itertools.islice((i for i in range(count) if i not in have), 10))
        shown = ", ".join(f"{i}/{count}" for i in first)
        more = f" and {number - len(first)} more" if number > len(first) else ""
        super().__init__(f"{number} of {count} parts missing: {shown}{more}")
        self.missing_count = number


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
    """Refuse a folder holding a finished dataset, other files, or parts of another run.

    A part may only write into a missing or empty folder, or an unfinished part folder of
    the same benchmark (it holds nothing but ``.posgen-parts/``).
    """
    out = resolve_target(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; nothing was written")
    if (out / MARKER).exists():
        raise OutputExistsError(
            f"{out} holds a finished dataset ({MARKER}); refusing to write parts into it"
        )
    if (out / PARTS_DIR / MARKER).exists():
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


def write_part(
    bench: BenchmarkSpec,
    out: Path,
    index: int,
    count: int,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    num_proc: int = 1,
    progress: Progress | None = None,
    finish: Finish | None = None,
) -> Manifest | None:
    """Write part ``index`` of ``count`` into ``out``; the manifest if this finished the folder.

    Returns ``None`` while other parts are still missing. The part that finishes the folder
    calls ``finish`` on it (:func:`finish_parts`).
    """
    if not 0 <= index < count:
        raise PartsError(f"part {index}/{count}: need 0 <= I < N")
    out = resolve_target(out)
    check_part_target(out, bench)
    plan = plan_benchmark(bench, shard_bytes)
    mine = part_of(plan, index, count)
    staging = out / PARTS_DIR
    staging.mkdir(parents=True, exist_ok=True)
    entries = write_shards(
        staging, mine, dict(bench.configs), num_proc, row_group_bytes, progress=progress
    )
    record = PartRecord(
        spec_id=bench.spec_id,
        benchmark=bench,
        index=index,
        count=count,
        shard_bytes=shard_bytes,
        row_group_bytes=row_group_bytes,
        files=entries,
    )
    write_atomically(staging / part_record_name(index, count), _record_bytes(record))
    try:
        return finish_parts(out, finish)
    except IncompleteError:
        return None


def _record_bytes(record: PartRecord) -> bytes:
    # Keys unsorted: the order of the configs is the order of the card's configs.
    return (json.dumps(record.model_dump(mode="json"), indent=2) + "\n").encode()


PUBLISHED = (CARD_NAME, "data", MARKER)
"""What finishing renames from ``.posgen-parts/`` into the folder, in this order: the card
first (its configs name exactly the finished files), the data, the manifest last."""


def finish_parts(out: Path, finish: Finish | None = None) -> Manifest:
    """Write the manifest of a folder whose parts are all present, then call ``finish`` on it
    (it writes the card); the manifest.

    Raises :class:`IncompleteError` while parts are missing, :class:`PartsError` when the
    records disagree, and :class:`~posgen.store.manifest.DamagedDataset` when a file does
    not match its record (the same lines ``posgen validate`` prints). Parts finishing at
    once take turns (a lock on ``.posgen-parts``); the later ones find it finished.
    """
    out = resolve_target(out)
    staging = out / PARTS_DIR
    with ExitStack() as stack:
        try:
            fd = stack.enter_context(exclusive(staging))  # one finisher at a time
        except FileNotFoundError:
            if (out / MARKER).exists():  # finished already (perhaps by a concurrent part)
                return verify_dataset(out)
            raise PartsError(f"{out} holds no posgen parts ({PARTS_DIR}/ is missing)") from None
        if not staging.exists() or os.stat(staging).st_ino != os.fstat(fd).st_ino:
            return verify_dataset(out)  # another part finished it while we waited
        if not (staging / MARKER).exists():
            _render(out, staging, finish)
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
    first = _agreeing(records)
    count = first.count
    have = {record.index for record in records}
    if any(i not in have for i in range(count)):
        raise IncompleteError(have, count)
    bench = first.benchmark
    if bench.spec_id != first.spec_id:
        raise PartsError("a part record's benchmark does not match its spec id")
    by_path = {entry.path: entry for record in records for entry in record.files}
    plan = plan_benchmark(bench, first.shard_bytes)
    entries = []
    for shard in plan:
        entry = by_path.get(shard.path)
        if entry is None:
            raise PartsError(f"no part recorded {shard.path}")
        entries.append(entry)
    for stale in (staging / "data").rglob(f".*{FILE_TMP_TAG}*"):
        remove_unowned(stale)
    manifest = shards_manifest(bench, plan, entries)
    problems = check_files(staging, manifest, hashes=False)
    if problems:  # not finished: rerun the damaged part, then merge again
        raise DamagedDataset(out, [str(p).replace(f"/{PARTS_DIR}/", "/", 1) for p in problems])
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


def merge_parts(out: Path, sources: list[Path], finish: Finish | None = None) -> Manifest:
    """Move the files and part records of folders ``sources`` into ``out``, then finish it
    (:func:`finish_parts`, which calls ``finish``).

    Everything is checked before anything moves: every source is a part folder, all parts
    belong to one run, ``out`` is missing, empty or an unfinished folder of that run, and no
    file already in ``out`` differs from the one that would replace it (merge never writes
    over a file; an identical one is left as it is).
    """
    out = resolve_target(out)
    moves: dict[Path, Path] = {}
    records: list[PartRecord] = []
    for source in map(resolve_target, map(Path, sources)):
        if out.exists() and source.exists() and os.path.samefile(source, out):
            continue
        found = _records(source)
        if not found:
            raise PartsError(f"{source} holds no posgen parts ({PARTS_DIR}/ is missing or empty)")
        for record in found:
            staged = source / PARTS_DIR
            for entry in record.files:
                moves[staged / entry.path] = out / PARTS_DIR / entry.path
            moves[staged / part_record_name(record.index, record.count)] = (
                out / PARTS_DIR / part_record_name(record.index, record.count)
            )
        records += found
    if records:
        check_part_target(out, _agreeing(records).benchmark)
        _agreeing(records + _records(out))
    for source, target in moves.items():
        if not source.is_file():
            raise PartsError(f"{source} is listed in its part record but missing")
        if os.path.lexists(target) and not _same_bytes(source, target):
            raise PartsError(f"{target} exists and differs from {source}; nothing was moved")
    for source, target in moves.items():  # records last: a part counts once its files are in
        target.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(target):
            shutil.move(str(source), str(target))
    return finish_parts(out, finish)


def _same_bytes(a: Path, b: Path) -> bool:
    return b.is_file() and a.stat().st_size == b.stat().st_size and sha256_file(a) == sha256_file(b)


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
