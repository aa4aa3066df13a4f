"""Shard-addressable runs: part I of N writes only its shards; the parts combine into one folder.

The shards of a run are fixed by the spec and the shard size (:func:`posgen.layout.plan_benchmark`),
and part ``I`` of ``N`` writes every N-th of them, starting with shard I
(:func:`posgen.layout.part_of`). Each part writes its Parquet files into the target folder
(temporary name, then rename) and records their manifest entries in
``.posgen-parts/part-IIIII-of-NNNNN.json``. When the last record is present, the folder is
*finished*: ``posgen.json`` and ``README.md`` are written exactly as a single-process run writes
them, and ``.posgen-parts`` is removed, so the folder is byte-identical to one written by
``posgen generate`` without ``--shard``.

Parts run anywhere: in one shared folder (the last part to finish finishes it), or in separate
folders on separate machines, copied into one folder afterwards (hidden files included, e.g.
``rsync -a part*/ OUT/``) and finished with ``posgen merge OUT``; ``posgen merge OUT DIR...``
moves the parts' files in for you.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from posgen.atomic import MARKER, OutputExistsError
from posgen.layout import (
    DEFAULT_ROW_GROUP_BYTES,
    DEFAULT_SHARD_BYTES,
    part_of,
    plan_benchmark,
)
from posgen.manifest import read_manifest
from posgen.spec import BenchmarkSpec
from posgen.writer import Progress, finish_folder, write_shards

PARTS_DIR = ".posgen-parts"
PART_FORMAT = "posgen-part"


class PartsError(ValueError):
    """Parts that do not belong together, or a folder that cannot take a part."""


class IncompleteError(PartsError):
    """Some parts of the run have not been written yet."""

    def __init__(self, missing: list[int], count: int) -> None:
        shown = ", ".join(f"{i}/{count}" for i in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        super().__init__(f"{len(missing)} of {count} parts missing: {shown}{more}")
        self.missing = missing


def part_record_name(index: int, count: int) -> str:
    """File name of the record of part ``index`` of ``count``.

    >>> part_record_name(2, 3)
    'part-00002-of-00003.json'
    """
    return f"part-{index:05d}-of-{count:05d}.json"


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
        if record["spec_id"] != bench.spec_id:
            raise PartsError(
                f"{out} holds parts of another benchmark (spec id {record['spec_id']}, "
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
) -> dict[str, Any] | None:
    """Write part ``index`` of ``count`` into ``out``; the manifest if this finished the folder.

    Returns ``None`` while other parts are still missing.
    """
    if not 0 <= index < count:
        raise ValueError(f"part {index}/{count}: need 0 <= I < N")
    out = Path(out)
    check_part_target(out, bench)
    plan = plan_benchmark(bench, shard_bytes)
    mine = part_of(plan, index, count)
    (out / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    entries = write_shards(
        out, mine, dict(bench.configs), num_proc, row_group_bytes, progress=progress
    )
    record = {
        "format": PART_FORMAT,
        "spec_id": bench.spec_id,
        "benchmark": bench.canonical(),
        "index": index,
        "count": count,
        "shard_bytes": shard_bytes,
        "row_group_bytes": row_group_bytes,
        "files": entries,
    }
    _write_json_atomically(out / PARTS_DIR / part_record_name(index, count), record)
    try:
        return finish_parts(out)
    except IncompleteError:
        return None


def finish_parts(out: Path) -> dict[str, Any]:
    """Write the manifest and card of a folder whose parts are all present; the manifest.

    Raises :class:`IncompleteError` while parts are missing, :class:`PartsError` when the
    records disagree or a file is missing or has the wrong size.
    """
    out = Path(out)
    records = _records(out)
    if not records:
        if (out / MARKER).is_file():
            return read_manifest(out)  # finished already (perhaps by a concurrent part)
        raise PartsError(f"{out} holds no posgen parts ({PARTS_DIR}/ is missing or empty)")
    first = records[0]
    keys = ("spec_id", "count", "shard_bytes", "row_group_bytes")
    for record in records[1:]:
        for key in keys:
            if record[key] != first[key]:
                raise PartsError(
                    f"parts disagree on {key}: {first[key]!r} (part {first['index']}) vs "
                    f"{record[key]!r} (part {record['index']})"
                )
    count = first["count"]
    have = {record["index"] for record in records}
    missing = [i for i in range(count) if i not in have]
    if missing:
        raise IncompleteError(missing, count)
    bench = BenchmarkSpec.model_validate(first["benchmark"])
    if bench.spec_id != first["spec_id"]:
        raise PartsError("a part record's benchmark does not match its spec id")
    by_path = {entry["path"]: entry for record in records for entry in record["files"]}
    plan = plan_benchmark(bench, first["shard_bytes"])
    entries = []
    for shard in plan:
        entry = by_path.get(shard.path)
        if entry is None:
            raise PartsError(f"no part recorded {shard.path}")
        path = out / shard.path
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            raise PartsError(f"{path} is missing or has the wrong size; rerun its part")
        entries.append(entry)
    for stale in (out / "data").rglob(".*.tmp-*"):
        stale.unlink(missing_ok=True)
    manifest = finish_folder(out, bench, plan, entries)
    shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
    return manifest


def merge_parts(out: Path, sources: list[Path]) -> dict[str, Any]:
    """Move the files and part records of folders ``sources`` into ``out``, then finish it."""
    out = Path(out)
    for source in map(Path, sources):
        if not (source / PARTS_DIR).is_dir():
            raise PartsError(f"{source} holds no posgen parts ({PARTS_DIR}/ is missing)")
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            relative = path.relative_to(source)
            if relative.parts[0] not in ("data", PARTS_DIR) or ".tmp-" in path.name:
                continue
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() and target.stat().st_size != path.stat().st_size:
                raise PartsError(f"{target} exists and differs from {path}")
            shutil.move(str(path), str(target))
    return finish_parts(out)


def _records(out: Path) -> list[dict[str, Any]]:
    folder = out / PARTS_DIR
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("part-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise PartsError(f"{path} is unreadable: {error}") from None
        if not isinstance(record, dict) or record.get("format") != PART_FORMAT:
            raise PartsError(f"{path} is not a posgen part record")
        records.append(record)
    return records


def _write_json_atomically(path: Path, body: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    # Keys unsorted: the order of the configs is the order of the card's configs.
    temporary.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(temporary, path)
