"""Arrow schema and Parquet encoding of POSGEN rows.

Every split of every config has the same explicit schema: ``id`` (int64, the row's
index in its split) and ``tokens`` (a variable-length list of uint8, or uint16 when
m > 256). A variable-length list, not a fixed-size one, because ``datasets`` gives all
splits of a config one feature set while train and test rows differ in length; the
per-split length is recorded in the manifest and the card.

Probe splits (:mod:`posgen.probe`) add ``source_id`` (int64, the id of the test row the
probe row is made from), ``replaced`` and ``probed`` (lists of uint32 positions) and
``far_rule`` (a list of tokens, one per probed position): :func:`probe_schema`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from posgen.generator import DEFAULT_BLOCK_ROWS, generate_rows, storage_dtype
from posgen.probe import ProbeBlock, probe_rows
from posgen.spec import TaskSpec, is_probe_split

TOKENS_LEAF = "tokens.list.element"
"""Parquet path of the token values (the leaf of the list column)."""

READ_BATCH_TOKENS = 1 << 22
"""Tokens per record batch read back (validation, scoring): bounds the decode buffers and
the readers' work arrays (a few tens of MB) whatever the row length."""


def read_batch_rows(length: int) -> int:
    """Rows of ``length`` tokens per record batch read back: :data:`READ_BATCH_TOKENS`
    tokens, at least one row.

    >>> read_batch_rows(64), read_batch_rows(4096), read_batch_rows(10**8)
    (65536, 1024, 1)
    """
    return max(1, READ_BATCH_TOKENS // max(1, length))


PARQUET_OPTIONS: dict[str, Any] = {
    # Chosen by measurement (`python -m benchmarks.bench --parquet-settings`; one core, m = 17,
    # disjoint windows, 262k rows x 256 tokens, write / bytes per token / read, in M tokens/s):
    #   dictionary + lz4                       110 / 0.65 / 168
    #   plain + lz4                            133 / 1.47 / 245
    #   byte stream split + lz4                179 / 1.03 / 212
    #   byte stream split + zstd-1 (chosen)    206 / 0.52 / 250
    # Parquet stores uint8 as INT32, so a plain token costs 4 bytes, three of them zero.
    # BYTE_STREAM_SPLIT puts each byte position of the column in its own stream: the three
    # zero streams cost zstd almost nothing and the token stream compresses to ~4 bits for
    # m = 17. It beats a dictionary (which hashes every value) on speed, size and reads.
    # Integer byte stream split needs a reader from 2024 on (pyarrow >= 16, the floor in
    # pyproject.toml). Statistics only on `id` (tokens always span 0..m-1).
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": False,
    # Probe splits: positions ascend within a row, so their deltas pack into a few bits
    # (cot's `probed`: 2x smaller and 2x faster to write than plain + zstd); `far_rule`
    # holds tokens. Same bytes as `use_byte_stream_split=[TOKENS_LEAF]` for the other splits.
    "column_encoding": {
        TOKENS_LEAF: "BYTE_STREAM_SPLIT",
        "far_rule.list.element": "BYTE_STREAM_SPLIT",
        "replaced.list.element": "DELTA_BINARY_PACKED",
        "probed.list.element": "DELTA_BINARY_PACKED",
    },
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


POSITION = pa.uint32()
"""Arrow type of a stored position (positions are below MAX_LENGTH = 2**20)."""


def probe_schema(modulus: int, metadata: dict[str, str] | None = None) -> pa.Schema:
    """The explicit schema of probe splits."""
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("tokens", pa.list_(token_type(modulus)), nullable=False),
            pa.field("source_id", pa.int64(), nullable=False),
            pa.field("replaced", pa.list_(POSITION), nullable=False),
            pa.field("probed", pa.list_(POSITION), nullable=False),
            pa.field("far_rule", pa.list_(token_type(modulus)), nullable=False),
        ],
        metadata=metadata,
    )


def split_schema(spec: TaskSpec, split: str, metadata: dict[str, str] | None = None) -> pa.Schema:
    """The schema of ``split``: :func:`probe_schema` for probe splits, else :func:`row_schema`."""
    make = probe_schema if is_probe_split(split) else row_schema
    return make(spec.modulus, metadata)


def _list_array(values: np.ndarray, offsets: np.ndarray, kind: pa.DataType) -> pa.ListArray:
    flat = pa.array(np.ascontiguousarray(values).astype(kind.value_type.to_pandas_dtype()))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), flat, type=kind)


def probe_table(block: ProbeBlock, schema: pa.Schema) -> pa.Table:
    """A table of the probe rows in ``block`` (ids = source ids = ``block.start ..``)."""
    ids = pa.array(np.arange(block.start, block.start + block.rows, dtype=np.int64))
    return pa.Table.from_arrays(
        [
            ids,
            token_lists(block.tokens, schema.field("tokens").type),
            ids,
            _list_array(block.replaced, block.replaced_offsets, schema.field("replaced").type),
            _list_array(block.probed, block.probed_offsets, schema.field("probed").type),
            _list_array(block.far_rule, block.probed_offsets, schema.field("far_rule").type),
        ],
        schema=schema,
    )


def rows_to_table(first_id: int, rows: np.ndarray, schema: pa.Schema) -> pa.Table:
    """A table over ``rows`` (``(n, length)``), ids ``first_id ..``, without copying tokens."""
    n = rows.shape[0]
    ids = pa.array(np.arange(first_id, first_id + n, dtype=np.int64))
    return pa.Table.from_arrays(
        [ids, token_lists(rows, schema.field("tokens").type)], schema=schema
    )


def token_lists(rows: np.ndarray, kind: pa.DataType) -> pa.ListArray:
    """``rows`` (``(n, length)``) as a list array of type ``kind``, without copying tokens."""
    n, length = rows.shape
    if n * length >= 2**31:
        raise ValueError("a table holds fewer than 2**31 tokens; use smaller row groups")
    offsets = pa.array(np.arange(0, (n + 1) * length, length, dtype=np.int32))
    flat = np.ascontiguousarray(rows).reshape(-1)
    # from_buffers wraps the numpy memory; pa.array(flat) would copy it (~1 ns a token)
    values = pa.Array.from_buffers(
        pa.from_numpy_dtype(flat.dtype), flat.size, [None, pa.py_buffer(flat)]
    )
    return pa.ListArray.from_arrays(offsets, values, type=kind)


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


def row_tables(
    spec: TaskSpec,
    split: str,
    start: int,
    stop: int,
    step: int,
    schema: pa.Schema,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> Iterator[pa.Table]:
    """Rows ``[start, stop)`` of ``split`` as tables of at most ``step`` rows each.

    The one place rows are generated for storage (Parquet and Arrow shards, in-memory
    ``datasets``): memory stays bounded by ``step`` rows whatever the split's size.

    >>> spec = TaskSpec(task="cot", train_size=5)
    >>> [t.num_rows for t in row_tables(spec, "train", 0, 5, 2, row_schema(17))]
    [2, 2, 1]
    """
    for first in range(start, stop, step):
        last = min(stop, first + step)
        if is_probe_split(split):
            yield probe_table(probe_rows(spec, split, first, last, block_rows), schema)
        else:
            yield rows_to_table(first, generate_rows(spec, split, first, last, block_rows), schema)
