"""Reference tokens to score against: from a dataset folder, a ``datasets`` split or an array.

A folder is read through its manifest (:func:`posgen.store.read_manifest`): the config's
spec, and the split's files in order (Parquet or Arrow IPC), whose ids must run
``0 .. rows-1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from posgen.arrow_io import table_tokens
from posgen.scoring.errors import ScoringError
from posgen.spec import TaskSpec
from posgen.store.check import inside
from posgen.store.formats import manifest_format
from posgen.store.manifest import DamagedDataset, read_manifest


@dataclass(frozen=True)
class ReferenceSplit:
    """One split of a dataset folder: its spec and its tokens in id order."""

    config: str
    split: str
    spec: TaskSpec
    tokens: np.ndarray

    @property
    def ids(self) -> np.ndarray:
        """Row ids ``0 .. rows-1``."""
        return np.arange(self.tokens.shape[0], dtype=np.int64)


def config_names(dataset_dir: Path) -> list[str]:
    """Configs recorded in a folder's manifest."""
    return list(read_manifest(Path(dataset_dir)).configs)


def load_reference(dataset_dir: Path, config: str, split: str = "test") -> ReferenceSplit:
    """The tokens of ``config``/``split`` in a posgen folder, checked against the manifest."""
    root = Path(dataset_dir)
    manifest = read_manifest(root)
    configs = manifest.configs
    if config not in configs:
        raise ScoringError(f"no config {config!r} in {root}; configs: {', '.join(configs)}")
    entry = configs[config]
    spec = entry.spec
    if split not in entry.splits:
        known = ", ".join(entry.ordered_splits)
        raise ScoringError(f"no split {split!r} in config {config!r}; splits: {known}")
    fmt = manifest_format(manifest)
    info = entry.splits[split]
    tables = []
    for file in info.files:
        path = inside(root, file.path)
        if path is None:
            raise DamagedDataset(root, [f"{root / file.path}: leads outside the dataset folder"])
        batches = list(fmt.batches(path, max(1, file.rows)))
        table = pa.Table.from_batches(batches).select(["id", "tokens"])
        ids = table.column("id").to_numpy()
        expected = np.arange(file.first_id, file.first_id + file.rows)
        if ids.shape != expected.shape or not np.array_equal(ids, expected):
            raise ScoringError(f"{file.path} does not hold rows {file.first_id}.. in order")
        tables.append(table)
    tokens = table_tokens(pa.concat_tables(tables)) if tables else np.empty((0, 0), np.uint8)
    if tokens.shape != (info.rows, info.length):
        raise ScoringError(
            f"{config}/{split} holds tokens of shape {tokens.shape}; the manifest says "
            f"({info.rows}, {info.length})"
        )
    return ReferenceSplit(config=config, split=split, spec=spec, tokens=tokens)


def reference_arrays(reference: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, tokens)`` of an array, a ``pyarrow.Table`` or a ``datasets.Dataset``.

    Arrays get ids ``0 .. rows-1``; tables and datasets use their ``id`` column if any.

    >>> ids, tokens = reference_arrays(np.zeros((2, 5), dtype=np.uint8))
    >>> ids.tolist(), tokens.shape
    ([0, 1], (2, 5))
    """
    if isinstance(reference, ReferenceSplit):
        return reference.ids, reference.tokens
    table = reference if isinstance(reference, pa.Table) else None
    if table is None and hasattr(reference, "with_format") and hasattr(reference, "column_names"):
        table = reference.with_format("arrow")[:]  # a datasets.Dataset, row order kept
    if table is not None:
        if "tokens" not in table.column_names:
            raise ScoringError(f"reference has no 'tokens' column; columns: {table.column_names}")
        try:
            tokens = table_tokens(table)
        except ValueError as error:
            raise ScoringError(f"reference tokens: {error}") from None
        if "id" in table.column_names:
            ids = table.column("id").to_numpy().astype(np.int64, copy=False)
        else:
            ids = np.arange(tokens.shape[0], dtype=np.int64)
        return ids, tokens
    tokens = np.asarray(reference)
    if tokens.ndim != 2:
        raise ScoringError(f"reference tokens must be (rows, length), got shape {tokens.shape}")
    return np.arange(tokens.shape[0], dtype=np.int64), tokens


def resolve_config(dataset_dir: Path, config: str | None) -> str:
    """``config``, or the folder's only config when ``config`` is None."""
    names = config_names(dataset_dir)
    if config is not None:
        return config
    if len(names) != 1:
        raise ScoringError(f"{dataset_dir} has configs {', '.join(names)}: pick one with --config")
    return names[0]
