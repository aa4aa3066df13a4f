"""The card's ``dataset_info``, read from the data files themselves.

``datasets`` enforces this block at load time (a wrong ``num_examples`` fails, declared
features are cast to), so nothing here is copied from the spec: the features come from
each file's Arrow schema, the row and token counts from each file (a Parquet footer, the
batches of an Arrow IPC stream), and the sizes from the files on disk. The files are first
checked against the manifest (:func:`posgen.store.dataset.check_files`, sizes, rows and
footers), so a card can never describe data the folder does not hold.

``num_bytes`` is the in-memory Arrow size ``datasets`` records for a split: per row an
int64 id and an int32 list offset, plus the token bytes. For 300 train rows of 64 uint8
tokens: ``300 * (8 + 4) + 300 * 64 = 22,800``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from posgen.store.dataset import check_files
from posgen.store.formats import manifest_format
from posgen.store.manifest import DamagedDataset, Manifest

DataMismatch = DamagedDataset
"""The files of a folder disagree with its manifest (the name the card module used)."""


def arrow_row_bytes(schema: pa.Schema) -> tuple[int, int]:
    """In-memory Arrow bytes ``(per row, per token)`` of a POSGEN schema.

    >>> from posgen.store.formats import row_schema
    >>> arrow_row_bytes(row_schema(17)), arrow_row_bytes(row_schema(1000))
    ((12, 1), (12, 2))
    """
    id_bytes = sum(f.type.bit_width // 8 for f in schema if pa.types.is_integer(f.type))
    tokens = schema.field("tokens").type
    offset_bytes = 8 if pa.types.is_large_list(tokens) else 4
    return id_bytes + offset_bytes, tokens.value_type.bit_width // 8


def extra_list_bytes(fmt: Any, path: Path, schema: pa.Schema) -> int:
    """In-memory bytes of list columns besides ``tokens`` (the probe splits' positions and
    answers): an int32 offset per row and the values, read from the file."""
    names = [f.name for f in schema if f.name != "tokens" and pa.types.is_list(f.type)]
    if not names:
        return 0
    total = 0
    for batch in fmt.batches(path, 1 << 16, tuple(names)):
        for name in names:
            column = batch.column(batch.schema.get_field_index(name))
            width = column.type.value_type.bit_width // 8
            total += 4 * len(column) + width * len(column.flatten())
    return total


def feature_entry(field: pa.Field) -> dict[str, str]:
    """The ``datasets`` YAML form of one column (ints and lists of ints, as POSGEN writes).

    >>> from posgen.store.formats import row_schema
    >>> [feature_entry(f) for f in row_schema(17)]
    [{'name': 'id', 'dtype': 'int64'}, {'name': 'tokens', 'list': 'uint8'}]
    """
    kind = field.type
    if pa.types.is_integer(kind):
        return {"name": field.name, "dtype": str(kind)}
    if pa.types.is_list(kind) and pa.types.is_integer(kind.value_type):
        return {"name": field.name, "list": str(kind.value_type)}
    raise DataMismatch(Path("."), [f"column {field.name!r} has type {kind}, not one posgen writes"])


def dataset_info(root: Path, manifest: Manifest) -> list[dict[str, Any]]:
    """The ``dataset_info`` YAML entries (one per config) of the folder ``root``.

    Written in the form ``datasets`` serializes itself (the tests compare the two), without
    importing ``datasets``, which would double the time of a small ``posgen generate``.
    Entries are sorted by config name, as ``datasets`` writes them. Raises
    :class:`~posgen.store.manifest.DamagedDataset` when a file disagrees with the manifest.
    """
    root = Path(root)
    problems = check_files(root, manifest, hashes=False)
    if problems:
        raise DamagedDataset(root, [str(p) for p in problems])
    fmt = manifest_format(manifest)
    block = []
    for config, _, split_entries in sorted(manifest.hf_configs()):
        splits = []
        schemas = set()
        download = size = 0
        features: list[dict[str, str]] = []
        for split, info in split_entries.items():
            num_bytes = 0
            for item in info.files:
                facts = fmt.facts(root / item.path)
                if facts.tokens != item.rows * info.length:
                    shown = f"{root / item.path}: {facts.tokens} tokens"
                    raise DataMismatch(root, [f"{shown}, not {item.rows} rows of {info.length}"])
                schema = facts.schema.remove_metadata()
                schemas.add(schema.to_string())
                features = [feature_entry(field) for field in schema]
                per_row, per_token = arrow_row_bytes(schema)
                num_bytes += facts.rows * per_row + facts.tokens * per_token
                num_bytes += extra_list_bytes(fmt, root / item.path, schema)
                download += item.bytes
            splits.append({"name": split, "num_bytes": num_bytes, "num_examples": info.rows})
            size += num_bytes
        if len(schemas) != 1:
            raise DataMismatch(root, [f"the splits of {config} do not share one schema"])
        block.append(
            {
                "config_name": config,
                "features": features,
                "splits": splits,
                "download_size": download,
                "dataset_size": size,
            }
        )
    return block
