"""Check 1, integrity: the files a manifest lists are there, unchanged, and nothing else is.

Per config: every listed file exists with the recorded sha256, byte size and row count,
the rows of a split add up, ids follow on from file to file, and the recorded spec id is
that of the recorded spec (and of the spec the user gave, if any). Unlisted data files
under ``data/`` fail the check too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from posgen.manifest import MANIFEST_NAME, sha256_file
from posgen.spec import TaskSpec
from posgen.validate.report import CheckResult
from posgen.validate.sources import DATA_SUFFIXES, Source, open_ipc


def _file_problems(root: Path, entry: dict[str, Any], spec_id: str) -> list[str]:
    path = root / entry["path"]
    if not path.is_file():
        return [f"{entry['path']}: file is missing"]
    problems = []
    if path.stat().st_size != entry.get("bytes", path.stat().st_size):
        problems.append(
            f"{entry['path']}: {path.stat().st_size} bytes, manifest says {entry['bytes']}"
        )
    if sha256_file(path) != entry["sha256"]:
        problems.append(f"{entry['path']}: sha256 differs from the manifest (file changed)")
    if path.suffix.lower() != ".parquet":  # Arrow IPC (--format arrow): rows only
        try:
            reader = open_ipc(path)
            rows = sum(batch.num_rows for batch in reader)
        except (pa.ArrowException, OSError) as error:
            return [*problems, f"{entry['path']}: not readable as Arrow IPC ({error})"]
        if rows != entry["rows"]:
            problems.append(f"{entry['path']}: {rows} rows, manifest says {entry['rows']}")
        return problems
    try:
        meta = pq.read_metadata(path)
    except (pa.ArrowException, OSError) as error:
        return [*problems, f"{entry['path']}: not readable as Parquet ({error})"]
    if meta.num_rows != entry["rows"]:
        problems.append(f"{entry['path']}: {meta.num_rows} rows, manifest says {entry['rows']}")
    stored = (meta.metadata or {}).get(b"posgen.spec_id")
    if stored is not None and stored.decode() != spec_id:
        problems.append(
            f"{entry['path']}: spec id {stored.decode()}, {MANIFEST_NAME} says {spec_id}"
        )
    return problems


def _split_problems(spec: TaskSpec, split: str, info: dict[str, Any]) -> list[str]:
    problems = []
    if split not in spec.split_names:
        return [f"split {split} is not a split of the spec ({', '.join(spec.split_names)})"]
    if info["rows"] != spec.split_size(split):
        problems.append(f"split {split}: {info['rows']} rows, spec says {spec.split_size(split)}")
    if info["length"] != spec.split_length(split):
        problems.append(
            f"split {split}: length {info['length']}, spec says {spec.split_length(split)}"
        )
    listed = sum(f["rows"] for f in info["files"])
    if listed != info["rows"]:
        problems.append(f"split {split}: files hold {listed} rows, split says {info['rows']}")
    expected_first = 0
    for f in info["files"]:
        if f.get("first_id", expected_first) != expected_first:
            problems.append(f"{f['path']}: first id {f['first_id']}, expected {expected_first}")
        expected_first += f["rows"]
    return problems


def check_integrity(source: Source) -> list[CheckResult]:
    """One result per (config, split) of the manifest, and one for unlisted files."""
    if source.manifest is None or source.root is None or source.bench is None:
        return []
    results = []
    root, manifest = source.root, source.manifest
    for config in dict.fromkeys(data.config for data in source.splits):
        entry = manifest["configs"][config]
        recorded = source.bench.configs[config]
        head = []
        if entry["spec_id"] != recorded.spec_id:
            head.append(
                f"{MANIFEST_NAME}: configs.{config}.spec_id {entry['spec_id']} is not the "
                f"id of the recorded spec ({recorded.spec_id}): the manifest was edited"
            )
        given = source.given_spec
        if given is not None and given.spec_id != entry["spec_id"]:
            head.append(
                f"the given spec ({given.spec_id}) does not match the data's spec "
                f"({entry['spec_id']})" + _spec_difference(given, recorded)
            )
        for data in source.splits:
            if data.config != config:
                continue
            info = entry["splits"][data.split]
            problems = head + _split_problems(recorded, data.split, info)
            for f in info["files"]:
                problems += _file_problems(root, f, entry["spec_id"])
            results.append(_result(config, data.split, problems, len(info["files"])))
            head = []
    unlisted = _unlisted(source)
    if unlisted is not None:
        results.append(unlisted)
    return results


def _spec_difference(given: TaskSpec, recorded: TaskSpec) -> str:
    a, b = given.canonical(), recorded.canonical()
    diff = [f"{key} {a[key]!r} vs {b[key]!r}" for key in a if a[key] != b[key]]
    return ": " + ", ".join(diff) if diff else ""


def _unlisted(source: Source) -> CheckResult | None:
    root = source.root
    listed = {
        f["path"]
        for entry in source.manifest["configs"].values()
        for info in entry["splits"].values()
        for f in info["files"]
    }
    # data/<config>/ for Parquet folders, <config>/<split>/ for Arrow IPC ones
    found = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in DATA_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    extra = [path for path in found if path not in listed]
    if not extra:
        return CheckResult(
            check="integrity", ok=True, message=f"no unlisted data files ({len(found)} listed)"
        )
    shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
    return CheckResult(
        check="integrity",
        ok=False,
        message=f"{len(extra)} data file(s) not in the manifest: {shown}",
        failures=len(extra),
    )


def _result(config: str, split: str, problems: list[str], files: int) -> CheckResult:
    if not problems:
        return CheckResult(
            check="integrity",
            config=config,
            split=split,
            ok=True,
            message=f"{files} file(s) match the manifest (sha256, rows, spec id)",
        )
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return CheckResult(
        check="integrity",
        config=config,
        split=split,
        ok=False,
        message="; ".join(problems[:3]) + more,
        failures=len(problems),
    )
