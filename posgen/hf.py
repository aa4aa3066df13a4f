"""Hugging Face ``datasets`` objects: in memory from a spec, or loaded from a folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from posgen.arrow_io import row_schema, row_tables
from posgen.generator import DEFAULT_BLOCK_ROWS
from posgen.spec import TaskSpec
from posgen.store.check import verify_dataset
from posgen.store.formats import folder_format, manifest_format
from posgen.store.layout import DEFAULT_ROW_GROUP_BYTES, generation_rows, rows_per
from posgen.store.manifest import read_manifest
from posgen.store.pinned import read_whole

if TYPE_CHECKING:
    import datasets


def split_table(spec: TaskSpec, split: str) -> pa.Table:
    """A whole split as one Arrow table (in row-group sized chunks)."""
    schema = row_schema(spec.modulus, {"posgen.spec_id": spec.spec_id, "posgen.split": split})
    per_group = rows_per(DEFAULT_ROW_GROUP_BYTES, spec, split)
    step = generation_rows(spec, split, per_group, DEFAULT_BLOCK_ROWS)
    return pa.concat_tables(row_tables(spec, split, 0, spec.split_size(split), step, schema))


def to_dataset_dict(spec: TaskSpec) -> datasets.DatasetDict:
    """Every split of ``spec`` as a ``datasets.DatasetDict``, in memory, no disk.

    >>> dd = to_dataset_dict(TaskSpec(task="cot", train_size=4, val_size=2, test_size=2))
    >>> dd["train"].num_rows, len(dd["test"][0]["tokens"])
    (4, 256)
    """
    if not isinstance(spec, TaskSpec):
        hint = (
            " (a benchmark: call it on each of bench.configs.values())"
            if hasattr(spec, "configs")
            else ""
        )
        raise TypeError(
            f"to_dataset_dict takes a TaskSpec, not a {type(spec).__name__}{hint}; "
            "e.g. to_dataset_dict(TaskSpec(task='cot'))"
        )
    import datasets
    from datasets.table import InMemoryTable

    return datasets.DatasetDict(
        {
            split: datasets.Dataset(
                InMemoryTable(split_table(spec, split)),
                split=datasets.NamedSplit(split),
                fingerprint=f"posgen-{spec.spec_id}-{split}",
            )
            for split in spec.split_names
        }
    )


def load(path: str | Path, config: str | None = None, verify: bool = True) -> datasets.DatasetDict:
    """Every split of ``config`` (the first config when None) of a posgen folder, offline;
    ``<config>-probe`` holds the config's probe splits.

    Parquet folders load with ``datasets.load_dataset``, Arrow IPC ones with
    ``datasets.load_from_disk``. With ``verify`` (the default) every file of ``config`` (of
    all configs when ``None``) is first checked against ``posgen.json``
    (:func:`posgen.store.check.verify_dataset`: size, sha256, rows, footer) and
    :class:`posgen.store.DamagedDataset` is raised, naming each damaged file. Loading sees
    one dataset even while ``generate --overwrite`` replaces it (the old one or the new one).
    """
    root = Path(path)

    def read() -> datasets.DatasetDict:
        if verify:
            sources = {name: source for name, source, _ in read_manifest(root).hf_configs()}
            checked = sources.get(config, config) if config else None  # cot-probe: cot's files
            manifest = verify_dataset(root, [checked] if checked else None)
            return manifest_format(manifest).load(root, config or next(iter(manifest.configs)))
        return folder_format(root, config).load(root, config)

    return read_whole(root, read)  # a folder replaced meanwhile is loaded again, whole
