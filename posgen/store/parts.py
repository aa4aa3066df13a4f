"""Part-addressable runs: part I of N writes only its shards; the parts combine into one folder.

The shards of a run are fixed by the spec and the shard size (:func:`posgen.store.layout.
plan_benchmark`), and part ``I`` of ``N`` writes every N-th of them, starting with shard I
(:func:`posgen.store.layout.part_of`). Each part writes its Parquet files into the target
folder (temporary name, then rename) and records their manifest entries in
``.posgen-parts/part-IIIII-of-NNNNN.json`` (a :class:`PartRecord`). When the last record is
present, the folder is *finished*: ``posgen.json`` and ``README.md`` are written exactly as a
single-process run writes them, and ``.posgen-parts`` is removed, so the folder is
byte-identical to one written by ``posgen generate`` without ``--part``.

Parts run anywhere: in one shared folder (the last part to finish finishes it), or in separate
folders on separate machines, copied into one folder afterwards (hidden files included, e.g.
``rsync -a part*/ OUT/``) and finished with ``posgen merge OUT``; ``posgen merge OUT DIR...``
moves the parts' files in for you.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from posgen.arrow_io import PARQUET_OPTIONS
from posgen.errors import UsageError, problem_lines
from posgen.spec import BenchmarkSpec
from posgen.store.atomic import MARKER, OutputExistsError, write_atomically
from posgen.store.check import check_files, verify_dataset
from posgen.store.formats import Progress
from posgen.store.layout import (
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
    build_manifest,
    read_bounded,
)
from posgen.store.writer import finish_folder, write_shards

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
    """Refuse a folder holding a finished dataset, other files, or parts of another run."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; nothing was written")
    if (out / MARKER).exists():
        raise OutputExistsError(
            f"{out} holds a finished dataset ({MARKER}); remove it before writing parts into it"
        )
    others = sorted(p.name for p in out.iterdir() if p.name not in ("data", PARTS_DIR))
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
) -> Manifest | None:
    """Write part ``index`` of ``count`` into ``out``; the manifest if this finished the folder.

    Returns ``None`` while other parts are still missing.
    """
    if not 0 <= index < count:
        raise PartsError(f"part {index}/{count}: need 0 <= I < N")
    out = Path(out)
    check_part_target(out, bench)
    plan = plan_benchmark(bench, shard_bytes)
    mine = part_of(plan, index, count)
    (out / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    entries = write_shards(
        out, mine, dict(bench.configs), num_proc, row_group_bytes, progress=progress
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
    # Keys unsorted: the order of the configs is the order of the card's configs.
    body = json.dumps(record.model_dump(mode="json"), indent=2) + "\n"
    write_atomically(out / PARTS_DIR / part_record_name(index, count), body.encode())
    try:
        return finish_parts(out)
    except IncompleteError:
        return None


def finish_parts(out: Path) -> Manifest:
    """Write the manifest and card of a folder whose parts are all present; the manifest.

    Raises :class:`IncompleteError` while parts are missing, :class:`PartsError` when the
    records disagree, and :class:`~posgen.store.manifest.DamagedDataset` when a file does
    not match its record (the same lines ``posgen validate`` prints).
    """
    out = Path(out)
    records = _records(out)
    if not records:
        if (out / MARKER).exists():  # finished already (perhaps by a concurrent part)
            return verify_dataset(out)
        raise PartsError(f"{out} holds no posgen parts ({PARTS_DIR}/ is missing or empty)")
    first = records[0]
    for record in records[1:]:
        for key in ("spec_id", "count", "shard_bytes", "row_group_bytes"):
            if getattr(record, key) != getattr(first, key):
                raise PartsError(
                    f"parts disagree on {key}: {getattr(first, key)!r} (part {first.index}) vs "
                    f"{getattr(record, key)!r} (part {record.index})"
                )
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
    for stale in (out / "data").rglob(f".*{FILE_TMP_TAG}*"):
        stale.unlink(missing_ok=True)
    files: dict[tuple[str, str], list[FileEntry]] = {}
    for shard, entry in zip(plan, entries, strict=True):
        files.setdefault((shard.config, shard.split), []).append(entry)
    problems = check_files(
        out, build_manifest(bench, files, "parquet", PARQUET_OPTIONS), hashes=False
    )
    if problems:  # not finished: rerun the damaged part, then merge again
        raise DamagedDataset(out, [str(p) for p in problems])
    manifest = finish_folder(out, bench, plan, entries, "parquet")
    shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
    return manifest


def merge_parts(out: Path, sources: list[Path]) -> Manifest:
    """Move the files and part records of folders ``sources`` into ``out``, then finish it."""
    out = Path(out)
    for source in map(Path, sources):
        if not (source / PARTS_DIR).is_dir():
            raise PartsError(f"{source} holds no posgen parts ({PARTS_DIR}/ is missing)")
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            relative = path.relative_to(source)
            if relative.parts[0] not in ("data", PARTS_DIR) or FILE_TMP_TAG in path.name:
                continue
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() and target.stat().st_size != path.stat().st_size:
                raise PartsError(f"{target} exists and differs from {path}")
            shutil.move(str(path), str(target))
    return finish_parts(out)


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
