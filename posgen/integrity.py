"""Cheap checks that a dataset folder is the one its manifest describes, file by file.

Run before loading (:func:`posgen.hf.load`): every problem names the file it is about.

- ``posgen.json`` is present, valid JSON, and its specs still hash to the recorded spec ids
  (an edited spec field is caught);
- every listed shard exists with the recorded size (a truncated or extended file is caught)
  and sha256 (a flipped byte, or two shards swapped, is caught), and its Parquet footer names
  the config, split and spec id the manifest puts it under;
- no unlisted ``.parquet`` file sits in a config's folder (``datasets`` would load it too).

This does not recompute tokens; ``posgen validate`` does.

>>> check_dataset(Path("/nonexistent/ds"))
['/nonexistent/ds/posgen.json: missing; not a posgen dataset folder']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from posgen.errors import problem_lines
from posgen.manifest import MANIFEST_NAME, benchmark_from_manifest, sha256_file


class DamagedDataset(ValueError):
    """A dataset folder does not match its manifest; ``lines`` holds one problem each."""

    def __init__(self, root: Path, lines: list[str]) -> None:
        self.root = root
        self.lines = lines
        super().__init__(f"{root} is damaged:\n" + "\n".join(lines))


def read_manifest_checked(root: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The manifest, or ``None`` and the reason it cannot be used."""
    path = root / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None, [f"{path}: missing; not a posgen dataset folder"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, [f"{path}: unreadable or not valid JSON ({' '.join(str(error).split())})"]
    if not isinstance(manifest, dict) or not isinstance(manifest.get("configs"), dict):
        return None, [f"{path}: not a posgen manifest (no 'configs' table)"]
    return manifest, []


def _spec_problems(path: Path, manifest: dict[str, Any]) -> list[str]:
    try:
        bench = benchmark_from_manifest(manifest)
    except ValidationError as error:
        return [f"{path}: {line}" for line in problem_lines(error)]
    except (KeyError, TypeError, AttributeError) as error:
        return [f"{path}: malformed manifest ({type(error).__name__}: {error})"]
    lines = []
    recorded = manifest.get("benchmark", {}).get("spec_id")
    if recorded != bench.spec_id:
        lines.append(
            f"{path}: benchmark spec_id {recorded!r} does not match its specs ({bench.spec_id}); "
            "the manifest was edited"
        )
    for name, spec in bench.configs.items():
        entry = manifest["configs"][name]
        if entry.get("spec_id") != spec.spec_id:
            lines.append(
                f"{path}: configs.{name}.spec_id {entry.get('spec_id')!r} does not match its "
                f"spec ({spec.spec_id}); the manifest was edited"
            )
        splits = entry.get("splits")
        if not isinstance(splits, dict) or set(splits) != set(spec.split_names):
            lines.append(f"{path}: configs.{name}.splits do not match the spec's splits")
            continue
        for split, info in splits.items():
            rows = sum(f.get("rows", 0) for f in info.get("files", []))
            if info.get("rows") != spec.split_size(split) or rows != spec.split_size(split):
                lines.append(
                    f"{path}: configs.{name}.splits.{split} lists {rows} rows in its files, "
                    f"the spec has {spec.split_size(split)}"
                )
    return lines


def _footer_problems(
    path: Path, shown: str, config: str, split: str, spec_id: str, info: dict[str, Any]
) -> list[str]:
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        return [f"{shown}: not a readable Parquet file ({' '.join(str(error).split())})"]
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    first = info.get("first_id")
    rows = f"{first}:{first + info['rows']}" if isinstance(first, int) else None
    found = tuple(meta.get(f"posgen.{key}") for key in ("config", "split", "spec_id", "rows"))
    if found != (config, split, spec_id, rows):
        return [
            f"{shown}: holds config/split/spec/rows {'/'.join(map(str, found))}, {MANIFEST_NAME} "
            f"lists it as {config}/{split}/{spec_id}/{rows} (files swapped or replaced)"
        ]
    return []


def _file_problems(
    root: Path, name: str, split: str, info: dict[str, Any], spec_id: str, hashes: bool
) -> list[str]:
    shown = str(root / info["path"])
    path = root / info["path"]
    if not path.is_file():
        return [f"{shown}: missing (listed in {MANIFEST_NAME})"]
    size = path.stat().st_size
    if size != info.get("bytes"):
        state = "truncated" if size < (info.get("bytes") or 0) else "longer than recorded"
        recorded = info.get("bytes")
        return [f"{shown}: {size:,} bytes, {MANIFEST_NAME} records {recorded!r} ({state})"]
    if hashes and sha256_file(path) != info.get("sha256"):
        changed = f"{shown}: sha256 differs from {MANIFEST_NAME} (bytes changed, or files swapped)"
        return [changed, *_footer_problems(path, shown, name, split, spec_id, info)]
    return _footer_problems(path, shown, name, split, spec_id, info)


def check_dataset(
    root: str | Path, configs: list[str] | None = None, hashes: bool = True
) -> list[str]:
    """Problems found in the dataset at ``root`` (empty when it matches its manifest).

    ``configs`` limits the file checks to those configs; ``hashes=False`` skips the sha256
    pass (sizes, footers and the manifest are still checked).
    """
    root = Path(root)
    manifest, lines = read_manifest_checked(root)
    if manifest is None:
        return lines
    lines = _spec_problems(root / MANIFEST_NAME, manifest)
    known = manifest["configs"]
    for name in configs or list(known):
        if name not in known:
            lines.append(f"{root / MANIFEST_NAME}: no config {name!r}; has {', '.join(known)}")
            continue
        listed = set()
        try:
            spec_id = known[name]["spec_id"]
            for split, info in known[name]["splits"].items():
                for entry in info["files"]:
                    listed.add(entry["path"])
                    lines += _file_problems(root, name, split, entry, spec_id, hashes)
        except (KeyError, TypeError, AttributeError) as error:
            lines.append(f"{root / MANIFEST_NAME}: malformed entry of config {name!r} ({error!r})")
        folder = root / "data" / name
        for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
            if str(path.relative_to(root)) not in listed:
                lines.append(f"{path}: not listed in {MANIFEST_NAME} (datasets would load it)")
    return lines


def verify_dataset(root: str | Path, configs: list[str] | None = None) -> None:
    """Raise :class:`DamagedDataset` if :func:`check_dataset` finds anything."""
    lines = check_dataset(root, configs)
    if lines:
        raise DamagedDataset(Path(root), lines)
