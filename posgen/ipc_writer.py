"""The Arrow IPC output: ``datasets`` ``save_to_disk`` folders, one per config.

Layout (``datasets.load_from_disk(DIR / CONFIG)`` reads it, memory-mapped, no conversion)::

    DIR/posgen.json                                     manifest (storage: arrow-ipc)
    DIR/<config>/dataset_dict.json                      {"splits": [...]}
    DIR/<config>/<split>/data-NNNNN-of-NNNNN.arrow      Arrow IPC streams
    DIR/<config>/<split>/dataset_info.json, state.json

Writing IPC is a copy of the token buffer (no Parquet encoding), faster than Parquet (see
``python -m posgen.bench``); files hold 1 byte per uint8 token, uncompressed (Parquet with
byte stream split and zstd-1: about 0.5 for m = 17).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from posgen.arrow_io import row_schema, rows_to_table
from posgen.atomic import atomic_folder
from posgen.generator import DEFAULT_BLOCK_ROWS, generate_rows
from posgen.layout import DEFAULT_SHARD_BYTES, GENERATION_BYTES, Shard, plan_split, rows_per
from posgen.manifest import build_manifest, write_manifest
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.writer import Progress, durable_shard, shard_entry, write_shards


def hf_features(spec: TaskSpec) -> dict[str, Any]:
    """The ``datasets`` features of a POSGEN table, as ``dataset_info.json`` spells them."""
    token = "uint8" if spec.token_bytes == 1 else "uint16"
    return {
        "id": {"dtype": "int64", "_type": "Value"},
        "tokens": {"feature": {"dtype": token, "_type": "Value"}, "_type": "List"},
    }


def plan_ipc(bench: BenchmarkSpec, shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Shard]:
    """Every ``.arrow`` file of every split, in output order."""
    shards = []
    for config, spec in bench.configs.items():
        for split in spec.split_names:
            for shard in plan_split(config, spec, split, shard_bytes):
                name = f"data-{shard.index:05d}-of-{shard.count:05d}.arrow"
                shards.append(dataclasses.replace(shard, path=f"{config}/{split}/{name}"))
    return shards


def write_ipc_shard(
    root: Path,
    shard: Shard,
    spec: TaskSpec,
    row_group_bytes: int,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write one ``.arrow`` stream (record batches of at most GENERATION_BYTES); its entry."""
    info = json.dumps({"info": {"features": hf_features(spec)}})
    schema = row_schema(spec.modulus, {"huggingface": info})
    length = spec.split_length(shard.split)
    step = max(1, min(block_rows, rows_per(GENERATION_BYTES, spec, shard.split)))
    with durable_shard(root / shard.path) as sink, pa.ipc.new_stream(sink, schema) as writer:
        for first in range(shard.start, shard.stop, step):
            last = min(shard.stop, first + step)
            rows = generate_rows(spec, shard.split, first, last, block_rows)
            writer.write_table(rows_to_table(first, rows, schema))
            if progress is not None:
                progress((last - first) * length)
    return shard_entry(shard, sink)


def write_benchmark_ipc(
    bench: BenchmarkSpec,
    out: Path,
    overwrite: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    num_proc: int = 1,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Generate ``bench`` as ``save_to_disk`` folders under ``out``; returns the manifest."""
    plan = plan_ipc(bench, shard_bytes)
    with atomic_folder(Path(out), overwrite) as build:
        entries = write_shards(
            build, plan, dict(bench.configs), num_proc, 0, progress=progress,
            shard_writer=write_ipc_shard,
        )  # fmt: skip
        files: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for shard, entry in zip(plan, entries, strict=True):
            files.setdefault((shard.config, shard.split), []).append(entry)
        for config, spec in bench.configs.items():
            folder = build / config
            _dump(folder / "dataset_dict.json", {"splits": list(spec.split_names)})
            for split in spec.split_names:
                names = [Path(e["path"]).name for e in files[(config, split)]]
                _dump(folder / split / "dataset_info.json", {"features": hf_features(spec)})
                _dump(
                    folder / split / "state.json",
                    {
                        "_data_files": [{"filename": name} for name in names],
                        "_fingerprint": f"posgen-{spec.spec_id}-{split}",
                        "_format_columns": None,
                        "_format_kwargs": {},
                        "_format_type": None,
                        "_output_all_columns": False,
                        "_split": split,
                    },
                )
        manifest = build_manifest(bench, files)
        manifest.pop("parquet", None)
        manifest["storage"] = "arrow-ipc (datasets save_to_disk; load_from_disk(DIR/CONFIG))"
        write_manifest(build, manifest)
    return manifest


def _dump(path: Path, body: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
