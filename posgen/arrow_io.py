"""Arrow schema and Parquet encoding of POSGEN rows.

Every split of every config has the same explicit schema: ``id`` (int64, the row's
index in its split) and ``tokens`` (a variable-length list of uint8, or uint16 when
m > 256). A variable-length list, not a fixed-size one, because ``datasets`` gives all
splits of a config one feature set while train and test rows differ in length; the
per-split length is recorded in the manifest and the card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from posgen.generator import storage_dtype

TOKENS_LEAF = "tokens.list.element"
"""Parquet path of the token values (the leaf of the list column)."""

PARQUET_OPTIONS: dict[str, Any] = {
    # Chosen by measurement (`python -m posgen.bench --parquet-settings`; one core, m = 17,
    # disjoint windows, 131k rows x 256; see BENCHMARKS.md for the current run):
    #   plain, no codec         176 M tok/s write, 4.05 bytes/token (uint8 is stored as INT32)
    #   plain, lz4              130 M, 1.47 B/token       plain, zstd-1   86 M, 0.84 B/token
    #   dictionary, no codec    114 M, 0.68 B/token       dictionary, lz4  116 M, 0.65 B/token
    #   dictionary, zstd-1      107 M, 0.61 B/token       (m = 256: dict+lz4 109 M, 1.02 B/token
    #                                                      vs plain lz4 111 M, 1.96 B/token)
    # A dictionary on the tokens (m distinct values) stores each token as a bit-packed index
    # (5 bits for m = 17): files 2.3x smaller than plain lz4 at about the same write speed and
    # faster reads; lz4 on top costs nothing measurable and shrinks repetitive data (paper
    # seeding repeats every C(m, w) rows). The ids get no dictionary (all distinct) and the
    # only statistics (min/max of tokens is always 0..m-1). Row groups: see layout.py.
    "compression": "lz4",
    "use_dictionary": [TOKENS_LEAF],
    "write_statistics": ["id"],
}


def token_type(modulus: int) -> pa.DataType:
    """Arrow type of one token."""
    return pa.uint8() if storage_dtype(modulus) == np.uint8 else pa.uint16()


def row_schema(modulus: int, metadata: dict[str, str] | None = None) -> pa.Schema:
    """The explicit schema of every POSGEN table."""
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("tokens", pa.list_(token_type(modulus)), nullable=False),
        ],
        metadata=metadata,
    )


def rows_to_table(first_id: int, rows: np.ndarray, schema: pa.Schema) -> pa.Table:
    """A table over ``rows`` (``(n, length)``), ids ``first_id ..``, without copying tokens."""
    n, length = rows.shape
    if n * length >= 2**31:
        raise ValueError("a table holds fewer than 2**31 tokens; use smaller row groups")
    ids = pa.array(np.arange(first_id, first_id + n, dtype=np.int64))
    offsets = pa.array(np.arange(0, (n + 1) * length, length, dtype=np.int32))
    flat = np.ascontiguousarray(rows).reshape(-1)
    # from_buffers wraps the numpy memory; pa.array(flat) would copy it (~1 ns a token)
    values = pa.Array.from_buffers(
        pa.from_numpy_dtype(flat.dtype), flat.size, [None, pa.py_buffer(flat)]
    )
    tokens = pa.ListArray.from_arrays(offsets, values, type=schema.field("tokens").type)
    return pa.Table.from_arrays([ids, tokens], schema=schema)


def table_tokens(table: pa.Table) -> np.ndarray:
    """The ``tokens`` column as a ``(rows, length)`` array; rows must share one length."""
    column = table.column("tokens").combine_chunks()
    if len(column) == 0:
        return np.empty((0, 0), dtype=column.type.value_type.to_pandas_dtype())
    offsets = column.offsets.to_numpy()
    lengths = np.diff(offsets)
    if lengths.min() != lengths.max():
        raise ValueError("rows have different lengths")
    values = column.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
    return values.reshape(len(column), int(lengths[0]))


def open_writer(where: Path | BinaryIO, schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet writer with the project's settings, to a path or a writable file object."""
    return pq.ParquetWriter(
        where if not isinstance(where, Path) else str(where), schema, **PARQUET_OPTIONS
    )
