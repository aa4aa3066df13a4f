"""Write a benchmark to a folder that ``datasets.load_dataset`` reads offline.

Layout::

    DIR/README.md                                  data card with the `configs` YAML
    DIR/posgen.json                                manifest (spec, versions, sha256s)
    DIR/data/<config>/<split>-NNNNN-of-NNNNN.parquet

The folder appears only when complete (:mod:`posgen.atomic`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import posgen
from posgen.arrow_io import open_writer, row_schema, rows_to_table
from posgen.atomic import WriteFailed, atomic_folder
from posgen.card import render_card
from posgen.generator import DEFAULT_BLOCK_ROWS, generate_rows
from posgen.layout import (
    DEFAULT_ROW_GROUP_BYTES,
    DEFAULT_SHARD_BYTES,
    Shard,
    plan_benchmark,
    rows_per,
)
from posgen.manifest import MANIFEST_NAME, build_manifest, file_entry, write_manifest
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


def write_shard(
    root: Path,
    shard: Shard,
    spec: TaskSpec,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Generate and write one shard; returns its manifest entry."""
    path = root / shard.path
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = row_schema(spec.modulus, shard_metadata(shard, spec))
    length = spec.split_length(shard.split)
    per_group = rows_per(row_group_bytes, spec, shard.split)
    with open_writer(path, schema) as writer:
        for first in range(shard.start, shard.stop, per_group):
            last = min(shard.stop, first + per_group)
            rows = generate_rows(spec, shard.split, first, last, block_rows)
            writer.write_table(rows_to_table(first, rows, schema), row_group_size=last - first)
            if progress is not None:
                progress((last - first) * length)
    return file_entry(root, shard)


def write_benchmark_into(
    build: Path,
    bench: BenchmarkSpec,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    progress: Progress | None = None,
    final: Path | None = None,
) -> dict[str, Any]:
    """Generate every config of ``bench`` into the empty folder ``build``; returns the manifest.

    The card written here says the data was not validated (see :mod:`posgen.publish`).
    An ``OSError`` (disk full, file too large) becomes :class:`WriteFailed` naming the file
    by its path under ``final``, the folder the build will become.
    """
    files: dict[tuple[str, str], list[dict[str, Any]]] = {
        (config, split): [] for config, spec in bench.configs.items() for split in spec.split_names
    }
    current = MANIFEST_NAME
    try:
        for shard in plan_benchmark(bench, shard_bytes):
            current = shard.path
            spec = bench.configs[shard.config]
            entry = write_shard(build, shard, spec, row_group_bytes, block_rows, progress)
            files[(shard.config, shard.split)].append(entry)
        current = MANIFEST_NAME
        manifest = build_manifest(bench, files)
        write_manifest(build, manifest)
        current = "README.md"
        (build / current).write_text(render_card(manifest, root=build))
    except OSError as error:  # disk full, file too large, I/O error: name the file
        raise WriteFailed((final or build) / current, error) from error
    return manifest


def write_benchmark(
    bench: BenchmarkSpec,
    out: Path,
    overwrite: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Generate every config of ``bench`` into ``out`` (atomically); returns the manifest."""
    with atomic_folder(Path(out), overwrite) as build:
        return write_benchmark_into(
            build, bench, shard_bytes, row_group_bytes, block_rows, progress, final=Path(out)
        )
