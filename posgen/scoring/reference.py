"""Reference tokens to score against: from a dataset folder, a ``datasets`` split or an array.

A folder is read through its manifest (:func:`posgen.store.read_manifest`): the config's
spec, and the split's files in order (Parquet or Arrow IPC), each checked against the
manifest on the bytes read, whose ids must run ``0 .. rows-1``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from posgen.arrow_io import read_batch_rows, table_tokens
from posgen.generator import storage_dtype
from posgen.scoring.metrics import ScoringError
from posgen.spec import TaskSpec
from posgen.store.check import read_listed
from posgen.store.formats import manifest_format
from posgen.store.manifest import DamagedDataset, read_manifest
from posgen.store.pinned import read_whole


@dataclass(frozen=True)
class ReferenceSplit:
    """One split of a dataset folder: its spec and its tokens in id order."""

    config: str
    split: str
    spec: TaskSpec
    tokens: np.ndarray
    files: tuple[tuple[str, str], ...] = ()
    """``(path, sha256)`` of the files read, each checked against the manifest as read."""

    @property
    def ids(self) -> np.ndarray:
        """Row ids ``0 .. rows-1``."""
        return np.arange(self.tokens.shape[0], dtype=np.int64)


def config_names(dataset_dir: Path) -> list[str]:
    """Configs recorded in a folder's manifest."""
    return list(read_manifest(Path(dataset_dir)).configs)


def load_reference(dataset_dir: Path, config: str, split: str = "test") -> ReferenceSplit:
    """The tokens of ``config``/``split`` in a posgen folder (see :func:`load_splits`)."""
    return load_splits(dataset_dir, config, [split])[split]


def load_splits(
    dataset_dir: Path, config: str, splits: Sequence[str], cut: Collection[str] = ()
) -> dict[str, ReferenceSplit]:
    """The tokens of several splits of ``config``, read once from one dataset, whole.

    Every file is read into memory once and checked there against the manifest (size,
    sha256, footer: :func:`posgen.store.check.read_listed`) before its rows are parsed, so
    damaged files are refused (:class:`DamagedDataset`, exit 1) and what is returned is
    exactly what the manifest lists. Tokens outside ``0 .. m-1`` are refused too (a
    manifest rewritten to match damaged files). The folder is pinned while it is read
    (:func:`posgen.store.pinned.read_whole`): a dataset replaced meanwhile (``generate
    --overwrite``) is read again, never mixed. Tokens keep their stored width (uint8 for
    m <= 256); the rows of the splits in ``cut`` keep only their first L tokens (the train
    length: what validation scores).
    """
    root = Path(dataset_dir)
    return read_whole(root, lambda: _load_splits(root, config, splits, cut))


def _load_splits(
    root: Path, config: str, splits: Sequence[str], cut: Collection[str]
) -> dict[str, ReferenceSplit]:
    manifest = read_manifest(root)
    configs = manifest.configs
    if config not in configs:
        raise ScoringError(f"no config {config!r} in {root}; configs: {', '.join(configs)}")
    entry = configs[config]
    for split in splits:
        if split not in entry.splits:
            known = ", ".join(entry.ordered_splits)
            raise ScoringError(f"no split {split!r} in config {config!r}; splits: {known}")
    fmt = manifest_format(manifest)
    out = {}
    for split in splits:
        info = entry.splits[split]
        where = (config, split, entry.spec_id, info.length)
        length = min(info.length, entry.spec.train_length) if split in cut else info.length
        tokens = np.empty((info.rows, length), dtype=storage_dtype(entry.spec.modulus))
        batch = read_batch_rows(info.length)
        for file in info.files:
            buffer = read_listed(root, fmt, where, file)
            _fill(tokens, fmt.batches(buffer, max(1, min(file.rows, batch))), file, root, entry)
        files = tuple((file.path, file.sha256) for file in info.files)
        out[split] = ReferenceSplit(config, split, entry.spec, tokens, files)
    return out


def _fill(tokens: np.ndarray, batches: Any, file: Any, root: Path, entry: Any) -> None:
    """Copy one file's rows into ``tokens[first_id:]``, checking ids and the vocabulary."""
    row = file.first_id
    modulus = entry.spec.modulus
    for batch in batches:
        table = pa.Table.from_batches([batch]).select(["id", "tokens"])
        ids = table.column("id").to_numpy()
        if not np.array_equal(ids, np.arange(row, row + len(ids))):
            raise DamagedDataset(root, [f"{root / file.path}: does not hold rows {row}.. in order"])
        try:
            values = table_tokens(table)
        except ValueError as error:
            raise DamagedDataset(root, [f"{root / file.path}: {error}"]) from None
        if values.shape[0] and values.shape[1] < tokens.shape[1]:
            raise DamagedDataset(root, [f"{root / file.path}: rows shorter than the manifest's"])
        if values.size and int(values.max()) >= modulus:
            at = int(np.argmax(values.max(axis=1) >= modulus))
            raise DamagedDataset(
                root,
                [
                    f"{root / file.path}: row {row + at} holds token {int(values[at].max())}, "
                    f"outside the vocabulary 0..{modulus - 1}"
                ],
            )
        tokens[row : row + len(ids)] = values[:, : tokens.shape[1]]
        row += len(ids)
    if row != file.first_id + file.rows:
        raise DamagedDataset(root, [f"{root / file.path}: {row - file.first_id} rows, "
                                    f"the manifest records {file.rows}"])  # fmt: skip


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
    return pick_config(config_names(dataset_dir), config, dataset_dir)


def pick_config(names: Sequence[str], config: str | None, dataset_dir: Path) -> str:
    """``config``, or the only one of a folder's config ``names`` when ``config`` is None.

    >>> pick_config(["cot"], None, Path("ds")), pick_config(["cot", "recursive"], "cot", Path("ds"))
    ('cot', 'cot')
    """
    if config is not None:
        return config
    if len(names) != 1:
        raise ScoringError(f"{dataset_dir} has configs {', '.join(names)}: pick one with --config")
    return names[0]
