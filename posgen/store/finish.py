"""Finishing a folder of written shards: its manifest, sidecars, ``posgen.json``, then the
caller's finishing step (the card), once.

The store knows nothing of cards: whoever writes a dataset hands the step down as
``finish`` (``posgen generate`` and ``posgen merge`` the unvalidated card, ``posgen publish``
the validated one, :func:`posgen.dataset.write_dataset` the unvalidated card by default).
Without one the folder holds its data and manifest only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from posgen.spec import BenchmarkSpec
from posgen.store.formats import FORMATS
from posgen.store.layout import Shard
from posgen.store.manifest import FileEntry, Manifest, build_manifest, write_manifest

Finish = Callable[[Path, Manifest], None]
"""Called on the complete folder (shards, sidecars, manifest) before it is published; writes
the card (``README.md``, the only file it may add). Raising leaves no finished folder."""


def shards_manifest(
    bench: BenchmarkSpec, plan: list[Shard], entries: list[FileEntry], storage: str = "parquet"
) -> Manifest:
    """The manifest of ``bench`` stored as the shards ``plan``, whose files have ``entries``."""
    files: dict[tuple[str, str], list[FileEntry]] = {
        (config, split): []
        for config, spec in bench.configs.items()
        for split in (*spec.split_names, *spec.probe_names)
    }
    for shard, entry in zip(plan, entries, strict=True):
        files[(shard.config, shard.split)].append(entry)
    return build_manifest(bench, files, storage, FORMATS[storage].parquet_options())


def finish_folder(root: Path, manifest: Manifest, finish: Finish | None = None) -> Manifest:
    """Write the sidecars and ``posgen.json`` of ``manifest`` into ``root``, then ``finish``."""
    fmt = FORMATS[manifest.storage_format]
    fmt.write_sidecars(root, manifest)
    write_manifest(root, manifest)
    if finish is not None:
        finish(root, manifest)
    return manifest
