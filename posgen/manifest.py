"""The manifest ``posgen.json``: what a dataset folder holds and how to check it.

It records the full spec and spec id of every config, the package and library versions,
and for every split its rows, row length, OOD boundary and files (path, rows, bytes,
sha256). It holds no timestamps, so the same spec gives the same manifest bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import posgen
from posgen.arrow_io import PARQUET_OPTIONS
from posgen.spec import BenchmarkSpec, TaskSpec

MANIFEST_NAME = "posgen.json"
FORMAT_VERSION = 1


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def split_entry(spec: TaskSpec, split: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest entry of one split."""
    return {
        "rows": spec.split_size(split),
        "length": spec.split_length(split),
        "seed_window": spec.window,
        "ood_boundary": spec.train_length,
        "files": files,
    }


def build_manifest(
    bench: BenchmarkSpec, files: dict[tuple[str, str], list[dict[str, Any]]]
) -> dict[str, Any]:
    """The whole manifest, from the benchmark and the entries of its files."""
    return {
        "format": "posgen-dataset",
        "format_version": FORMAT_VERSION,
        "posgen_version": posgen.__version__,
        "libraries": {"numpy": np.__version__, "pyarrow": pa.__version__},
        "parquet": PARQUET_OPTIONS,
        "benchmark": {
            "name": bench.name,
            "description": bench.description,
            "spec_id": bench.spec_id,
        },
        "configs": {
            config: {
                "spec_id": spec.spec_id,
                "spec": spec.canonical(),
                "splits": {
                    split: split_entry(spec, split, files[(config, split)])
                    for split in spec.split_names
                },
            }
            for config, spec in bench.configs.items()
        },
    }


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Write ``posgen.json`` (two-space indent, trailing newline).

    Keys keep the order :func:`build_manifest` gives them, which is fixed by the spec
    (configs and splits in spec order), so the bytes are deterministic.
    """
    path = root / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a dataset folder."""
    path = Path(root) / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{root} has no {MANIFEST_NAME}: not a posgen dataset") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def benchmark_from_manifest(manifest: dict[str, Any]) -> BenchmarkSpec:
    """The benchmark spec a manifest records (validated again)."""
    return BenchmarkSpec(
        name=manifest["benchmark"]["name"],
        description=manifest["benchmark"].get("description", ""),
        configs={name: entry["spec"] for name, entry in manifest["configs"].items()},
    )
