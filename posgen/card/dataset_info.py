"""The card's ``dataset_info``, read from the Parquet files themselves.

``datasets`` enforces this block at load time (a wrong ``num_examples`` fails, declared
features are cast to), so nothing here is copied from the spec: the features come from
each file's Arrow schema, the row and token counts from each file's footer, and the
sizes from the files on disk. The footers are also checked against the manifest, so a
card can never describe data the folder does not hold.

``num_bytes`` is the in-memory Arrow size ``datasets`` records for a split: per row an
int64 id and an int32 list offset, plus the token bytes. For 300 train rows of 64 uint8
tokens: ``300 * (8 + 4) + 300 * 64 = 22,800``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


class DataMismatch(ValueError):
    """The files of a folder disagree with its manifest (missing, resized, other rows)."""


@dataclass(frozen=True)
class SplitData:
    """What one split's files hold, from their footers."""

    rows: int
    tokens: int
    num_bytes: int
    download_bytes: int


def arrow_row_bytes(schema: pa.Schema) -> tuple[int, int]:
    """In-memory Arrow bytes ``(per row, per token)`` of a POSGEN schema.

    >>> from posgen.arrow_io import row_schema
    >>> arrow_row_bytes(row_schema(17)), arrow_row_bytes(row_schema(1000))
    ((12, 1), (12, 2))
    """
    id_bytes = schema.field("id").type.bit_width // 8
    tokens = schema.field("tokens").type
    offset_bytes = 8 if pa.types.is_large_list(tokens) else 4
    return id_bytes + offset_bytes, tokens.value_type.bit_width // 8


def file_counts(path: Path) -> tuple[pa.Schema, int, int]:
    """``(Arrow schema, rows, tokens)`` of one Parquet file, from its footer only."""
    meta = pq.read_metadata(path)
    schema = meta.schema.to_arrow_schema()
    column = schema.get_field_index("tokens")
    tokens = sum(meta.row_group(i).column(column).num_values for i in range(meta.num_row_groups))
    return schema, meta.num_rows, tokens


def read_split(
    root: Path, config: str, split: str, entry: dict[str, Any]
) -> tuple[pa.Schema, SplitData]:
    """Read one split's footers and check them against its manifest entry."""
    schema: pa.Schema | None = None
    rows = tokens = num_bytes = download = 0
    for item in entry["files"]:
        path = Path(root) / item["path"]
        if not path.is_file():
            raise DataMismatch(f"{item['path']} is listed in the manifest but missing")
        size = path.stat().st_size
        if size != item["bytes"]:
            raise DataMismatch(
                f"{item['path']} has {size} bytes; the manifest says {item['bytes']}"
            )
        file_schema, file_rows, file_tokens = file_counts(path)
        if file_rows != item["rows"]:
            raise DataMismatch(
                f"{item['path']} holds {file_rows} rows; the manifest says {item['rows']}"
            )
        file_schema = file_schema.remove_metadata()
        if schema is not None and not file_schema.equals(schema):
            raise DataMismatch(f"{item['path']} has another schema than the rest of {split}")
        schema = file_schema
        per_row, per_token = arrow_row_bytes(file_schema)
        rows += file_rows
        tokens += file_tokens
        num_bytes += file_rows * per_row + file_tokens * per_token
        download += size
    if schema is None:
        raise DataMismatch(f"{config}/{split} lists no files")
    if rows != entry["rows"] or tokens != entry["rows"] * entry["length"]:
        raise DataMismatch(
            f"{config}/{split} holds {rows} rows and {tokens} tokens; the manifest says "
            f"{entry['rows']} rows of length {entry['length']}"
        )
    return schema, SplitData(rows, tokens, num_bytes, download)


def feature_entry(field: pa.Field) -> dict[str, str]:
    """The ``datasets`` YAML form of one column (ints and lists of ints, as POSGEN writes).

    >>> from posgen.arrow_io import row_schema
    >>> [feature_entry(f) for f in row_schema(17)]
    [{'name': 'id', 'dtype': 'int64'}, {'name': 'tokens', 'list': 'uint8'}]
    """
    kind = field.type
    if pa.types.is_integer(kind):
        return {"name": field.name, "dtype": str(kind)}
    if pa.types.is_list(kind) and pa.types.is_integer(kind.value_type):
        return {"name": field.name, "list": str(kind.value_type)}
    raise DataMismatch(f"column {field.name!r} has type {kind}, not one posgen writes")


def dataset_info(root: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``dataset_info`` YAML entries (one per config) of the folder ``root``.

    Written in the form ``datasets`` serializes itself (the tests compare the two), without
    importing ``datasets``, which would double the time of a small ``posgen generate``.
    Entries are sorted by config name, as ``datasets`` writes them.
    """
    block = []
    for config, entry in sorted(manifest["configs"].items()):
        splits = []
        schemas = set()
        download = size = 0
        features: list[dict[str, str]] = []
        for split, split_entry in entry["splits"].items():
            schema, data = read_split(root, config, split, split_entry)
            schemas.add(schema.to_string())
            features = [feature_entry(field) for field in schema]
            splits.append({"name": split, "num_bytes": data.num_bytes, "num_examples": data.rows})
            download += data.download_bytes
            size += data.num_bytes
        if len(schemas) != 1:
            raise DataMismatch(f"the splits of {config} do not share one schema")
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
